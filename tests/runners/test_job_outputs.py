"""Taking a job's outputs out of its folder: nothing outside the folder, ever."""

import pytest

from runners.base import JobOutputSpec, OutputRefused
from runners.jobs import copy_outputs_from_folder


@pytest.mark.parametrize("path", ["../secret", "/etc/passwd", "model/../../secret", "", "model//x", "./secret"])
def test_a_job_output_path_that_could_leave_its_folder_is_refused(tmp_path, path):
    (tmp_path / "secret").write_text("the hub's secret")
    (tmp_path / "output").mkdir()
    with pytest.raises(OutputRefused, match="is not an output path"):
        copy_outputs_from_folder(tmp_path / "output", [JobOutputSpec(name="x", path=path)], into=tmp_path / "in",
                                 max_bytes=100)
    assert not (tmp_path / "in" / "x").exists()


def test_a_fifo_is_not_a_plain_file(tmp_path):
    import os

    (tmp_path / "output").mkdir()
    os.mkfifo(tmp_path / "output" / "pipe")
    with pytest.raises(OutputRefused, match="is not a plain file"):
        copy_outputs_from_folder(tmp_path / "output", [JobOutputSpec(name="x", path="pipe")], into=tmp_path / "in",
                                 max_bytes=100)
