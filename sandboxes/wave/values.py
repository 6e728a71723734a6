"""Wave's value formats: Decimal strings, rounding rules, Date/DateTime text, currency exponents, provinces."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor-unit digits where they differ from 2; Currency.exponent and Money.raw follow these.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}

# Names for the provinces most test data uses; other valid ISO 3166-2 codes are accepted and named by their code.
PROVINCE_NAMES: dict[str, str] = {
    "CA-AB": "Alberta",
    "CA-BC": "British Columbia",
    "CA-MB": "Manitoba",
    "CA-NB": "New Brunswick",
    "CA-NL": "Newfoundland and Labrador",
    "CA-NS": "Nova Scotia",
    "CA-NT": "Northwest Territories",
    "CA-NU": "Nunavut",
    "CA-ON": "Ontario",
    "CA-PE": "Prince Edward Island",
    "CA-QC": "Quebec",
    "CA-SK": "Saskatchewan",
    "CA-YT": "Yukon",
    "US-CA": "California",
    "US-FL": "Florida",
    "US-IL": "Illinois",
    "US-MA": "Massachusetts",
    "US-NY": "New York",
    "US-TX": "Texas",
    "US-WA": "Washington",
    "GB-ENG": "England",
    "GB-SCT": "Scotland",
    "NO-03": "Oslo",
    "NO-46": "Vestland",
}

_PROVINCE_CODE = re.compile(r"^([A-Z]{2})-[A-Z0-9]{1,3}$")
PRODUCT_PRICE_PLACES = 5  # ProductCreateInput.unitPrice: "rounded to nearest 5 decimal places with ties going away"
INVOICE_ITEM_PLACES = 8  # InvoiceCreateItemInput.quantity/unitPrice: 8 decimal places, ties away from zero


def currency_exponent(code: str) -> int:
    return _EXPONENTS.get(code, 2)


def province_country(code: str) -> str | None:
    """The country part of an ISO 3166-2 code (`CA-ON` -> `CA`), or None when the code is not of that shape."""
    match = _PROVINCE_CODE.match(code)
    return match.group(1) if match else None


def parse_decimal(value: object) -> Decimal | None:
    """A Decimal from a JSON string or number (Wave accepts both); None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def round_places(value: Decimal, places: int) -> Decimal:
    """Round to `places` decimals, ties away from zero (ROUND_HALF_UP on Decimal rounds magnitudes)."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def format_decimal(value: Decimal, *, padded: bool = False) -> str:
    """Decimal output as captured from Wave: plain notation, no trailing zeros (`100`, `10.5`, `1.23456`).

    `padded` gives the sandbox's earlier form with at least two decimals (`100.00`, `10.50`).
    """
    text = format(value.normalize(), "f")
    if text in ("-0", ""):
        text = "0"
    if not padded:
        return text
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def money_value(value: Decimal, currency: str) -> tuple[int, str]:
    """(raw minor units, major-unit string) of an amount in `currency`, rounded to the currency's exponent."""
    exponent = currency_exponent(currency)
    rounded = round_places(value, exponent)
    return int(rounded.scaleb(exponent)), format(rounded, "f")


def format_datetime(value: datetime) -> str:
    """`yyyy-MM-ddThh:mm:ss.sssZ` in UTC."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_date(value: date) -> str:
    return value.isoformat()


def parse_datetime(value: object) -> datetime | None:
    """An aware UTC datetime from ISO-8601 text (a `Z` suffix or an offset; naive text counts as UTC)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_date(value: object) -> date | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


def truncate_to_ms(value: datetime) -> datetime:
    """Wave shows milliseconds; the sandbox stores no more, so two edits in one millisecond tie on modifiedAt."""
    return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)
