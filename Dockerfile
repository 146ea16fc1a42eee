# One image for the project's own services in docker-compose.yml: the machine simulator, the
# plots server and Mage (the compose file picks the command). Dependencies come from the lock
# (requirements.txt) so the image runs exactly the versions the tests ran; no secret is baked
# in: tokens and webhooks arrive as environment variables at run time.
#
# Two stages, so the image builds the same on linux/amd64 and linux/arm64 (Apple Silicon,
# Graviton): `build` installs the lock into a virtualenv and has a C toolchain for the pins that
# ship no wheel for the platform (psutil 5.9.8 on arm64; image_build/wheels.json lists them and
# the tests check this stage against it); the runtime stage copies the virtualenv and has no
# compiler.
FROM python:3.11.16-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
COPY requirements.txt ./
RUN python -m venv /opt/venv && pip install -r requirements.txt


FROM python:3.11.16-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Mage's version-control features call git.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# A non-root user with a home: Mage writes ~/.gitconfig and ~/.ipython.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

# The locked dependencies, built above; this layer changes only when the lock does.
COPY --from=build /opt/venv /opt/venv

WORKDIR /app

# The project's packages, installed without re-resolving (the lock is the resolution). Editable,
# so influx_magic.settings.REPO_ROOT is /app as in a checkout.
COPY pyproject.toml README.md ./
COPY magic_common/ magic_common/
COPY fleetwatch/ fleetwatch/
COPY influx_magic/ influx_magic/
COPY localflux/ localflux/
COPY localsystem/ localsystem/
COPY machine_simulator/ machine_simulator/
RUN pip install --no-deps -e .

# Mage rewrites files in its project at start-up (triggers.yaml, .file_versions), so the app
# user owns it. State, plots and Mage's database live under /data, on named volumes.
COPY --chown=app:app influx-magic/ influx-magic/
RUN mkdir -p /data/state /data/plots /data/mage && chown -R app:app /data

ENV FLEETWATCH_STATE_DIR=/data/state \
    FLEETWATCH_OUTPUT_DIR=/data/plots \
    MAGE_DATA_DIR=/data/mage

USER app

EXPOSE 5005 6789 8000
CMD ["python", "-m", "influx_magic.mage_server", "--host", "0.0.0.0", "--port", "6789"]
