"""The `wavesync` command line and the process orchestration behind `up`, `demo` and `sandbox`."""
