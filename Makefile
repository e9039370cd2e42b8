# `make demo` runs the main job, `make test` the tests; both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The stamp names this install recipe too: a changed recipe reinstalls.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

$(STAMP): pyproject.toml Makefile
	# The MQTT tests start their own Mosquitto and make certificates with openssl; the
	# kiosk tests need a real X server (Xvfb) and a real browser (Debian's Chromium); the
	# service tests need systemd's tools and a real RTSP server (gst-rtsp-server); the style
	# tests and benches need Starry Night (opencv-doc's sample images).
	(command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto) && \
		command -v Xvfb >/dev/null && command -v chromium >/dev/null && \
		command -v systemd-analyze >/dev/null && \
		test -e /usr/share/doc/opencv-doc/examples/data/starry_night.jpg && \
		test -e /usr/lib/x86_64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib -o \
			-e /usr/lib/aarch64-linux-gnu/girepository-1.0/GstRtspServer-1.0.typelib || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			mosquitto mosquitto-clients openssl xvfb chromium systemd python3-gi \
			gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
			opencv-doc)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch (the machine's pip config finds it on disk; a bare `torch`
	# would pull a multi-GB CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	# bench: the peers the benches measure against; tests/test_benches.py runs every bench
	# (--quick). face_recognition comes without its dependencies (they name dlib, which pip
	# would compile for a quarter of an hour; the bench extra's dlib-bin is it prebuilt).
	# About 15 s from a warm pip cache, 50 s cold.
	$(PY) -m pip install -q -e '.[pc,export,demo,dev,bench]'
	$(PY) -m pip install -q --no-deps face_recognition==1.3.0 face_recognition_models==0.3.0
	rm -f $(VENV)/.installed-* && touch $@

.PHONY: install demo test bench
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jetkiosk demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/open_set.py
	$(PY) bench/faces_vs_face_recognition.py
	$(PY) bench/live_loop.py
	$(PY) bench/search.py
	$(PY) bench/mqtt_delivery.py
	$(PY) bench/stylize.py
