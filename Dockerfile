# Placeholder: the production image (multi-stage, non-root, `mlink-bridge run`) lands with the
# operations issue. It exists now because the repository layout promises it.
FROM python:3.11-slim
CMD ["python", "-c", "print('mlink-bridge image not built yet')"]
