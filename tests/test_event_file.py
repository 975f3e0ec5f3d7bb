"""TensorBoard event files written directly: the checksum's known answer, records framed as
TFRecord and checked on reading, `Event` protos that TensorBoard's own message classes parse
to the same steps, tags and values tensorboardX writes."""
import glob
import os

import numpy as np
import pytest
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2

from unigrpo_jax import event_file, metric_writer


def test_crc32c_known_answers():
  # RFC 3720, appendix B.4, and the classic check value.
  assert event_file.crc32c(b"123456789") == 0xE3069283
  assert event_file.crc32c(bytes(32)) == 0x8A9136AA
  assert event_file.crc32c(bytes([0xFF] * 32)) == 0x62A8AB43
  assert event_file.crc32c(bytes(range(32))) == 0x46DD794E


def scalars_of(path):
  """[(step, tag, value)] of an event file, parsed by TensorBoard's `Event` message."""
  out, versions = [], []
  for data in event_file.read_records(path):
    e = event_pb2.Event.FromString(data)
    if e.HasField("file_version"):
      versions.append(e.file_version)
    out += [(e.step, v.tag, v.simple_value) for v in e.summary.value]
  return versions, out


def test_scalars_read_back_as_tensorboardx_writes_them(tmp_path):
  logged = [(1, {"loss": 0.5, "reward/combined": -1.25}), (2, {"loss": np.float32(0.1)}),
            (2**40, {"x": 3e38, "y": -0.0})]
  writer = metric_writer.MetricWriter(str(tmp_path / "ours"))
  reference = SummaryWriter(str(tmp_path / "tbx"))
  for step, values in logged:
    writer.write(step, values)
    for tag, value in values.items():
      reference.add_scalar(tag, value, step)
  writer.close()
  reference.close()
  (ours,) = glob.glob(str(tmp_path / "ours" / "events.out.tfevents.*"))
  (theirs,) = glob.glob(str(tmp_path / "tbx" / "events.out.tfevents.*"))
  assert scalars_of(ours) == scalars_of(theirs)
  versions, values = scalars_of(ours)
  assert versions == ["brain.Event:2"] and len(values) == 5
  assert values[2] == (2, "loss", np.float32(0.1))
  assert metric_writer.read(str(tmp_path / "ours"))[2] == {"step": 2**40, "x": 3e38, "y": -0.0}


def test_a_damaged_record_is_named(tmp_path):
  writer = event_file.EventFile(str(tmp_path))
  writer.write(3, {"a": 1.0})
  writer.close()
  assert len(event_file.read_records(writer.path)) == 2
  whole = open(writer.path, "rb").read()
  with open(writer.path, "r+b") as f:
    f.seek(os.path.getsize(writer.path) - 6)
    f.write(b"\x00")
  with pytest.raises(ValueError, match="checksum does not match"):
    event_file.read_records(writer.path)
  # The intact file cut short (a writer killed mid-record): in the last record's footer (1, 4
  # bytes off), data (11, 15) and header (30; the record is 12 + 23 + 4 bytes), and half-way
  # through the file (inside the first record).
  for cut in (1, 4, 11, 15, 30, len(whole) - len(whole) // 2):
    with open(writer.path, "wb") as f:
      f.write(whole[:len(whole) - cut])
    with pytest.raises(ValueError, match="cut short"):
      event_file.read_records(writer.path)


def test_a_torn_json_line_is_left_out_and_cut_before_a_resumed_writer_appends(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write(1, {"a": 1.0})
  writer.write(2, {"a": 2.0})
  writer.close()
  path = tmp_path / "metrics.jsonl"
  whole = path.read_bytes()
  path.write_bytes(whole[:-7])  # the second record cut mid-write, as a reader of a live run sees
  assert metric_writer.read(str(tmp_path)) == [{"step": 1, "a": 1.0}]
  writer = metric_writer.MetricWriter(str(tmp_path))  # the run resumed after a kill
  writer.write(2, {"a": 2.5})
  writer.close()
  assert metric_writer.read(str(tmp_path)) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.5}]
