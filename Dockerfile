# One image for every Clipstream process; the compose file picks the command.
FROM python:3.11-slim

# DejaVu draws the "AI-generated · @creator" watermark; PyAV wheels bundle FFmpeg.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY api ./api
COPY streams ./streams
COPY generation ./generation
COPY moderation ./moderation
COPY ranking ./ranking
COPY schemas ./schemas
# The gpu extra brings torch (CUDA build), diffusers and transformers for the GPU backend.
# The s3 extra lets the lake sink write to an object store (LAKE_ROOT=s3://…).
RUN pip install --no-cache-dir ".[gpu,s3]"

RUN useradd --create-home --uid 10001 clipstream && mkdir -p /data/media /data/faust /data/lake && chown -R clipstream /data
USER clipstream
ENV PYTHONUNBUFFERED=1 MEDIA__ROOT=/data/media WORKERS__DATA_DIR=/data/faust
ENTRYPOINT ["clipstream"]
CMD ["api"]
