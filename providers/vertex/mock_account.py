"""The mock's service account: a key file the mock server and the tests agree on.

MOCK ONLY, NEVER VALID AT GOOGLE. Both RSA keys below were generated once for the
mock (2048-bit, `cryptography`) and exist nowhere else; Google has never seen them.
They are constants, not generated at import, because the mock server and the tests
may run in different processes and must still agree on them.

`GOOD_ACCOUNT` is a service-account key file as Google hands it out (every field a
string), plus the `location` the fleet reads. `WRONG_ACCOUNT` is the same account
signing with another private key, as a stale or tampered key file would: the mock's
token endpoint answers it `invalid_grant` "Invalid JWT Signature.", as Google does.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "CANARIES",
    "CLIENT_EMAIL",
    "GOOD_ACCOUNT",
    "LOCATION",
    "PRIVATE_KEY_ID",
    "PROJECT_ID",
    "WRONG_ACCOUNT",
]

PROJECT_ID: Final = "mock-project"
LOCATION: Final = "us-central1"
CLIENT_EMAIL: Final = "fleet-mock@mock-project.iam.gserviceaccount.com"
PRIVATE_KEY_ID: Final = "5f0c3e7a9b1d2c4e6f8a0b2c4d6e8f0a1b3c5d7e"

# Mock only, never valid at Google.
_GOOD_KEY: Final = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDUWYrCdhiMyI6t\n"
    "61ZJuUVOwws8CC35JbqkTcDY/JhEZx8a9cUDiemF6WHzZ+dcNrHXcbjuTbYPMvbO\n"
    "F8Q5AXf+T3IUPRwbnYfyIAlKUDrQcvLmX5zvKgrcdVBjpQo/vXMYhWfckbBVSc+M\n"
    "8k0Q22VmyUpXaV/yeg4/b0fzypFPibszPP9DxJWgmDQzfleCOZWsmWA7CAcM1NCd\n"
    "KsLhA6X6WKBLfv3B+Yc6LYXRXVJw7klsh03qv0ZIqkhD3srqVDrtgXiEQCf3vpeY\n"
    "zdJRZU6DTGc3708jCM7Oepf0HqinZM7DJEmgbLGWWkODYa/JdzgIi6JdfVylA5CW\n"
    "UzHXH2nXAgMBAAECggEATUkjsCAEUmUCTPlsx9tXBtIFKj294cKiGf+0kyToFGlF\n"
    "0G2n3WBZ7mOhQ1JLSewcMRISYSVGgGSnoB3VTHwk3Jm0pvoQ21or6utPBk2KAmj7\n"
    "z+33s7IlDtThw8qDHuzIUaHoScZ6m6gIEr/zXZHEZ7MWTBctlRZoTh0l3myZE42f\n"
    "H/CDHabKNV+Z8yXoju2PfELlx4bCqf0muPT8WL52jZqJCcScOR9G/zs5P6XtNGfG\n"
    "VRHTw0x7ZjVZwzTgPavkaSKND4Lkb9wdVdBsnspXM5iHCynDuk0OaooRuF/YE0GU\n"
    "WDRqCjvH9zigDQMFhEvGVTob6qHgLOmVXZAIzO+QgQKBgQDu8yCQN0NuTGthkN1E\n"
    "o5jtcatns2GV95YcJDEDffS5+cey3g3RiAlflP3Ids24jSC/W5+UhJuXEpV+XYH2\n"
    "tFpdd+6oGfZn2xZXp2frRTY4v6gIqRY04wQ7SGJAdf2lZWa0mXNPBp/TAhCTrpg6\n"
    "qOiQ83m/GBCmJ2UqiFfGhjTTVwKBgQDjgIQfAM6UjvGR4fVl0ulgguYBu+Kr00og\n"
    "qWIDBuC2+LmY44KXh1TBgLQztC0vPHXBLgQFyCAq1/2uf7QbdBm1OOx/zT+wbGqL\n"
    "uhAuhkt5ECyJv9mU0OOisB/MVCRo/ySLnqnYLf4xyK79O8KnGansQmp1DiSj1DTx\n"
    "Nlk9bHaNgQKBgE1//afIxM4ZaxqR6bJBfXBF1dokjBof20f1VRBU4fMP2H1jGAhF\n"
    "nwSpRkamgcLBw0VNaky5Vd2B4YrCuUxS4pw+MeHDye+VV4HGgiYEpLlzMATfEpzE\n"
    "pLK1n2hY3JOwd8dLneKbu2qs2MONdUJRVlztGyennn7FeEJ7RjzVenyxAoGBAMtm\n"
    "gbm+XPRRgQWvAlpRYbqaDc6LDzQUqnfdOPX/1jWA118sOfwEUPDYg0Se2K8c3SMk\n"
    "YxBQRwJHLlYvcvYArWNrS3dQKJsxs2jNp94Qz7Wjkk5uKrh0srEnyqZCrHL7es8h\n"
    "wjS3mkckZ9+c6IHB3jyPfOK/DF81QUhQESVrresBAoGBAOjIrKsNPANJ7329Omoq\n"
    "v9m/oR/5tRak7O5ylNJkS8X/H5u1YTvYzJ/nLjGXmy53/XrwKL/HcH00a69p7J1G\n"
    "cfKn++2gEiTZgUV6npqMxLCjqBZYoeKqIz2/ExGwKzp3HhPA0ns+cvb29Pb9P+gR\n"
    "0R6eAkyx44de0H53qlNnbGg1\n"
    "-----END PRIVATE KEY-----\n"
)

# Mock only, never valid at Google: the "wrong" key the mock refuses.
_WRONG_KEY: Final = (
    "\n"
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCSU12bAc+EiVEW\n"
    "GQqKpkugjxwifw/a2zaaLk2rbcaUEqgml7jp9xhNL8LwIbaeAg1Oze+UKhCdyg6n\n"
    "s8vTVv3PPwkg6szOYD6WbA5c4M2EH1PeGVFVeQMjofEQaQeZ/0iCyC51ekCtRehq\n"
    "MIWNOyEL8x/B/o1pl+2y2cMDOUXFdALXgs+INQeamCOu+SgHEP5wiYe7XXDNAmVk\n"
    "ahMovCa7F/QzdZSsgY421Xk6Zriej5SJy0dptfirm6ZIMiLZ/AP/bnzgBfjUZswb\n"
    "NhgEH623I2n7l0/Pb1AAvdlge5KfRGZCWVYyj2/AOs9AbNtwvTyixjic83Y9TKD6\n"
    "W+ElH8BxAgMBAAECggEAIayBvCxcf1nCiV1V6bZ/bQHCLcYj9e/Azxac1Ti8HFN2\n"
    "0vrTmTQ+KXU2XWDEz/QU7+/AlM5haI6ZdMqRu58nZcxR43tlipDnlmJjo8gwQ5ma\n"
    "CWC2MP9aU5bvDSG+mBgBrec3md16iOWvqNBly6yx3DglNNXJ4WUPVLt8f39sqRXC\n"
    "di6qeghTfd5uPaH1nPp0duz85MgH456ScxoQeKQzD0/USCp1ybKt0E9YVps1knbx\n"
    "qeCjrqq2Fhsyrk9tB2lHAVjsBREvfk/6A1nhLAWR5J275Xs0dTE0dJYDmcPANHA6\n"
    "4EGD1+7k5Njr70t7c/Rv7Bgz83qV7wQYyF1QQsGVYQKBgQDIk9luVcM4FkTVpEGR\n"
    "3er7wc00mRAXmpWiXeKKTe2RZqKdUnci5qJGsSMLXPcOZHZo+HeJynemH3XPpc6G\n"
    "3XUx1pawvAE7d6ML49yfLcOsek4oyCbyy53ZOuBImrIOAgMMPNdtuKgNkMSixy2P\n"
    "3C/q7qxFHZrTKE13cNjiCTEoBQKBgQC6we2afS8T0QPDbp85kb2HXGM/uESCuJQb\n"
    "KM7VBYB5gEUSk3qGNPD5dadrSSj7kkB6wPwPps6fHqT+SyzuQvaJMfnkRxmbqSf1\n"
    "ho0qYsE0XBrw03MumgJAu0y9wdOIeyoTO3Gci1/ZnjPK53OYlVWuTdCOKzbv2DrP\n"
    "1uCDEBY+fQKBgQCjxx3umvbJsF1KeVHVEniSU4AEp8rdCyuNpc2aEuGeLUkw3qpL\n"
    "BDmTMYak+6b7yIprUh8BkyI5skyXXhMSSngsVsU60HjNHvYyej+mdk7lYgS6BhzP\n"
    "efWM8Cc9AZvMFlZ4wqFBhVsroH7/T1Xjtu4ljfd6hB7stmby1WEyyECsJQKBgHne\n"
    "PryHYAcgZ8JKF6Erl3ATO7jC+AINjKhEcuPTWUjwCSLcFiIpve4rdnquHQ49G9J+\n"
    "yH02LrLq/mPqjoFUNSjF8fmi4/UN50Ny7/9uvgD68aGhehI48atoDeXt66muJYCz\n"
    "U6oB0SRi9g08B9TT7jt2D9gWHx1YDti9sXgVMU7JAoGBAKmKRXeUud4RJbzCXv6U\n"
    "kQXxA77aiSxvobqtl78Y227t4rRyonH1yTyxYPGZZtkcDbUWcxNnWvvKYdqYkfMz\n"
    "x5o516LigFRRXomtSQ0j8t4aFCT6/bGkmEsFjGi0//93keNtezwG5fAbuXksERkp\n"
    "F0ldc96H9fBJJVTRuiJmlCyq\n"
    "-----END PRIVATE KEY-----\n"
)


def _account(private_key: str) -> Mapping[str, str]:
    return MappingProxyType(
        {
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": PRIVATE_KEY_ID,
            "private_key": private_key,
            "client_email": CLIENT_EMAIL,
            "client_id": "104242424242424242424",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            "fleet-mock%40mock-project.iam.gserviceaccount.com",
            "universe_domain": "googleapis.com",
            "location": LOCATION,
        }
    )


GOOD_ACCOUNT: Final = _account(_GOOD_KEY)
WRONG_ACCOUNT: Final = _account(_WRONG_KEY)

# Lines from the middle of each key: if any part of a key reaches a message, it shows.
CANARIES: Final = (
    _GOOD_KEY.splitlines()[5],
    _GOOD_KEY.splitlines()[20],
    _WRONG_KEY.splitlines()[5],
    _WRONG_KEY.splitlines()[20],
)
