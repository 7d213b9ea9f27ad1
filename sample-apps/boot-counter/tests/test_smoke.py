"""Smoke tests of the boot counter, run on panorama-emulator with its pytest plugin.

    pip install panorama-emulator && pytest tests/

The app has no camera and no HDMI output: the tests read what it printed and what it stored.
"""

import json

PREFIX = "boot-counter: {"


def boot_report(app, boot):
    """The JSON report the app prints when it starts for the ``boot``-th time."""

    def report():
        for line in app.logs().splitlines():
            if line.startswith(PREFIX):
                found = json.loads(line.split(": ", 1)[1])
                if found["boot"] == boot:
                    return found
        return None

    return app.wait_until(report, message=f"the report of boot {boot}")


def test_counts_boots_in_persistent_storage(panorama_app):
    boot_report(panorama_app, 1)
    assert panorama_app.storage("boot_count").read_text() == "1\n"
    panorama_app.reboot()
    boot_report(panorama_app, 2)
    assert panorama_app.storage("boot_count").read_text() == "2\n"
    panorama_app.power_cut()
    boot_report(panorama_app, 3)
    assert panorama_app.storage("boot_count").read_text() == "3\n"


def test_temporary_files_do_not_survive_a_reboot(panorama_app):
    boot_report(panorama_app, 1)
    panorama_app.reboot()
    assert boot_report(panorama_app, 2)["previous_scratch_file_present"] is False


def test_code_and_root_are_read_only(panorama_app):
    report = boot_report(panorama_app, 1)
    assert report["root_dir"] == "read-only file system"
    assert report["code_dir"] == "read-only file system"
