"""Cross-cutting pieces shared by every Clipstream process: settings, records,
topic catalog, errors, the SQL store and the process supervisor."""
