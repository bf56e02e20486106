"""TensorFlow's C++ start-up notices, hidden unless the user asks for them.

TensorFlow >= 2.19 writes its start-up notices (absl's "All log messages before
absl::InitializeLog()", oneDNN's "custom operations are on", cpu_feature_guard's instruction list)
from C++ before absl logging is set up, so TF_CPP_MIN_LOG_LEVEL no longer reaches them
(tensorflow/tensorflow#100442). All of them are written while `import tensorflow` runs, so stderr
(file descriptor 2) goes to a temporary file for exactly that import; afterwards every line that
is not such a notice is written to the real stderr. A TF_CPP_MIN_LOG_LEVEL the user set wins:
then nothing is filtered.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# "I0000 00:00:1795793194.734143   31504 port.cc:153] ...", its continuation line, and absl's pre-init warning
NOTICE = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::"
                    rb"InitializeLog|To enable the following instructions: )")


def without_notices(text: bytes) -> bytes:
    """Returns stderr output without TensorFlow's info and warning start-up notices (errors stay)."""
    return b"".join(line for line in text.splitlines(keepends=True) if not NOTICE.match(line))


def import_tensorflow() -> None:
    """Imports TensorFlow (once per process), dropping its C++ start-up notices and its later C++ INFO
    lines (XLA's "service.cc ... StreamExecutor", "Compiled cluster using XLA!" when a speed probe or a
    run compiles with XLA) unless TF_CPP_MIN_LOG_LEVEL is set."""
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow  # noqa: F401
        return
    # read by TensorFlow's C++ logging when it starts: INFO off, warnings and errors kept. The start-up
    # notices below are written before it is read, hence the capture.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = without_notices(captured.read())
            if rest:
                os.write(2, rest)
