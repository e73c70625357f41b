"""Sizes in bytes as the user reads them (sizes.py), the same in the estimate, the run list and errors."""

from simclr_studio.sizes import GB, KB, MB, format_size


def test_sizes_in_binary_units():
    assert format_size(0) == "0 bytes" and format_size(1023) == "1023 bytes"
    assert format_size(KB) == "1.0 KB" and format_size(1536) == "1.5 KB"
    assert format_size(999 * KB) == "999.0 KB" and format_size(1000 * KB) == "1.0 MB"  # never "1000.0 KB"
    assert format_size(12.34 * MB) == "12.3 MB" and format_size(2 * GB) == "2.0 GB"
    assert format_size(1500 * GB) == "1500.0 GB"
