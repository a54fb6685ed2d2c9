import pytest

from gas.errors import GasError
from gas.units import format_count, parse_count


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2.5G", 2_500_000_000),
        ("500M", 500_000_000),
        ("2.5e9", 2_500_000_000),
        ("15m", 15_000_000),
        ("1200", 1200),
        (" 0.5G ", 500_000_000),
        ("1e3K", 1_000_000),
        (3e9, 3_000_000_000),
    ],
)
def test_parse_count_accepts_suffixes_and_exponents(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["abc", "2.5X", "", "G", "-1G", "0", "1.2.3G", "nan"])
def test_parse_count_rejects_with_one_line(text):
    with pytest.raises(GasError) as error:
        parse_count(text)
    assert "\n" not in str(error.value)


def test_format_count():
    assert format_count(12_659_352) == "12.66M"
    assert format_count(4_914_193_920) == "4.91G"
    assert format_count(512) == "512"
