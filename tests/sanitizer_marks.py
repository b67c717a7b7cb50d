"""What a sanitizer build prints when it finds something (make test-asan:
AddressSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer). The CLI fuzz,
HTTP fuzz and device-fault tests all look for it in a program's output, so
they share one definition."""
import re

SANITIZER_RE = re.compile(r"(Address|Leak|UndefinedBehavior)Sanitizer|runtime error:")


def sanitizer_report(*texts):
    """True when any of the texts holds a sanitizer's report."""
    return any(SANITIZER_RE.search(t or "") for t in texts)
