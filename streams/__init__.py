"""Faust stream processors: thin shells that decode a record, call a pure function
from generation/, moderation/ or ranking/, and send the result on."""
