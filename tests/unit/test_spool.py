from pathlib import Path

import pytest

from gateway.dicom.header import UnreadableDataset, check_uid
from gateway.dicom.spool import Spool, SpoolFull


def test_write_is_complete_under_final_name_and_leaves_no_temporary(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=0)
    spooled = spool.write("1.2", "1.2.3", "1.2.3.4", (b"x" * 1000,))
    assert spooled.relative_path == "1.2/1.2.3/1.2.3.4.dcm" and spooled.size_bytes == 1000
    assert (tmp_path / spooled.relative_path).read_bytes() == b"x" * 1000
    assert [p.name for p in (tmp_path / "1.2/1.2.3").iterdir()] == ["1.2.3.4.dcm"]


def test_existing_final_file_is_never_replaced(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=0)
    first = spool.write("1.2", "1.2.3", "1.2.3.4", (b"first",))
    second = spool.write("1.2", "1.2.3", "1.2.3.4", (b"second",))
    assert first.relative_path != second.relative_path
    assert (tmp_path / first.relative_path).read_bytes() == b"first"
    spool.discard(second.relative_path)
    assert not (tmp_path / second.relative_path).exists()


def test_free_space_threshold(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=10**18)
    with pytest.raises(SpoolFull, match="expected at least"):
        spool.write("1.2", "1.2.3", "1.2.3.4", (b"x",))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("bad", ["../../etc/passwd", "1.2.3/4", "", "1." * 40, "1.2.a"])
def test_uids_that_are_not_safe_file_names_are_refused(bad: str) -> None:
    with pytest.raises(UnreadableDataset, match="expected a UID"):
        check_uid("SOP Instance UID", bad)
