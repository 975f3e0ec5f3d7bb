"""TensorBoard's event-file format, written directly: a TFRecord file of `Event` protocol
buffers, the first naming the file version, each after it one step's scalar summaries.

Only what scalars need is encoded (wall time, step, `Summary.Value(tag, simple_value)`), so
no TensorFlow and no tensorboardX (which imports PyTorch when it is installed, seconds on
every start of a training process). Records are framed as TFRecord: length, masked CRC-32C
of the length, data, masked CRC-32C of the data."""
import os
import socket
import struct
import time


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum TFRecord uses."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked checksum: rotated right by 15 bits, plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # a negative int64 is ten bytes of two's complement
  out = bytearray()
  while True:
    bits, value = value & 0x7F, value >> 7
    out.append(bits | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (wire type 2)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int = 0, scalars: dict | None = None,
          file_version: str | None = None) -> bytes:
  """One serialised `Event`: wall_time (1, double), step (2, int64), and either file_version
  (3, string) or a summary (5) of `Summary.Value`s with tag (1) and simple_value (2, float)."""
  out = b"\x09" + struct.pack("<d", wall_time)
  if step:
    out += b"\x10" + _varint(step)
  if file_version is not None:
    out += _field(3, file_version.encode())
  if scalars:
    values = b"".join(_field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
                      for tag, value in scalars.items())
    out += _field(5, values)
  return out


def record(data: bytes) -> bytes:
  """`data` framed as one TFRecord."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


def read_records(path: str) -> list[bytes]:
  """The records of a TFRecord file, each checked against its checksums."""
  out = []
  cut = f"{path}: the last record is cut short (truncated file)"
  damaged = f"{path}: a record's checksum does not match (damaged file)"
  with open(path, "rb") as f:
    while header := f.read(12):
      if len(header) < 12:
        raise ValueError(cut)
      if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
        raise ValueError(damaged)
      length, = struct.unpack("<Q", header[:8])
      data, footer = f.read(length), f.read(4)
      if len(data) != length or len(footer) != 4:  # a writer stopped mid-record
        raise ValueError(cut)
      if struct.unpack("<I", footer)[0] != masked_crc32c(data):
        raise ValueError(damaged)
      out.append(data)
  return out


class EventFile:
  """Appends scalar summaries to a new `events.out.tfevents.*` file in `logdir`."""

  def __init__(self, logdir: str):
    self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time()):010d}."
                                     f"{socket.gethostname()}.{os.getpid()}")
    self.file = open(self.path, "ab")
    self.file.write(record(event(time.time(), file_version="brain.Event:2")))
    self.file.flush()

  def write(self, step: int, scalars: dict[str, float]):
    self.file.write(record(event(time.time(), step, scalars)))
    self.file.flush()

  def close(self):
    self.file.close()
