# One earpiece gateway machine in a container (not built in CI).
#   docker build -t earpiece .
#   docker run --rm -p 8080:8080 -e ELEVENLABS_API_KEY=… -e TWILIO_AUTH_TOKEN=… earpiece \
#          serve --host 0.0.0.0 --provider elevenlabs --public-url https://voice.example.com
# `docker stop` sends SIGTERM: calls drain for --drain-grace seconds; give it that long:
#   docker stop --time 330 <container>   (or stop_grace_period in compose)
FROM python:3.11-slim

WORKDIR /opt/earpiece
COPY pyproject.toml README.md ./
COPY actors ./actors
COPY gateway ./gateway
COPY providers ./providers
# The same install as the README's first command.
RUN pip install --no-cache-dir -e . \
    && useradd --system --home /opt/earpiece earpiece
USER earpiece

ENV EARPIECE_HOST=0.0.0.0 \
    EARPIECE_WORKERS=auto \
    EARPIECE_DRAIN_GRACE=300
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["earpiece"]
CMD ["serve"]
