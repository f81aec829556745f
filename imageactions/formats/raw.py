"""Raw disk images: data with no disk-format header, perhaps with a partition table."""

from .inspection import Inspection
from .partitions import find_partition_table
from .reader import ImageReader


def inspect_raw(reader: ImageReader) -> Inspection:
    return Inspection("raw", reader.size, {"partition_table": find_partition_table(reader.head)})
