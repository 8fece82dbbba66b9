FROM python:3.11-slim
WORKDIR /srv/videojobs
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["gunicorn", "--workers", "2", "--worker-class", "gthread", "--threads", "16", "--bind", "0.0.0.0:8000", "app.wsgi:app"]
