"""The app as a person uses it, locally: a phone-sized headless Chromium (Debian's package, driven by
Playwright) on the app, in front of the REAL stream (a StreamingJob on the session's fitted model, 1 s
trigger) writing the answers; the known map is the model version's own (fruits.knownmap).

The journeys: a test/ photo is named; an extra_classes/ photo is "a fruit I don't know yet"; a text
file named .jpg is refused in plain words; everything works from the keyboard alone; /ops shows the
stream's numbers; a person says "no, it's …" another fruit and the vote is recorded. Screenshots go to a temporary folder (printed); none is committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from app_support import Phone, first_answered, needs_chromium, screenshot

from app.main import create_app
from app.serve import BackgroundServer
from demo.run import stop_stream, wait_for_first_trigger
from demo.workspace import app_workspace
from fruits.answers import ANSWERED, open_answer_store
from streaming.job import StreamingJob
from support import champion_copy, table_rows

pytestmark = [pytest.mark.slow, needs_chromium]
KNOWN, UNKNOWN = "Banana", "Pineapple Mini"  # a test/ fruit the model knows; an extra_classes/ one it does not


@pytest.fixture(scope="module")
def world(spark, settings, fitted, tmp_path_factory):
    """The stream on its own landing folder and answers store, and the app on the same settings."""
    work = tmp_path_factory.mktemp("app-local")
    run = app_workspace(
        settings,
        work,
        model_name="fruits-app",
        app_uploads_per_minute=60,
    )  # every visitor here is 127.0.0.1
    champion_copy(run, fitted, "fruits-app")  # its own @champion: nothing another test moves
    job = StreamingJob(run, spark=spark)
    job.start()
    try:
        wait_for_first_trigger(job)
        with BackgroundServer(create_app(run)) as server:
            yield server.url, run
    finally:
        stop_stream(job)


@pytest.fixture(scope="module")
def photos(world, data_dir) -> dict[str, Path]:
    """A test/ photo the model names right and an extra_classes/ photo it flags (app_support.first_answered)."""
    known = first_answered(
        world[0],
        sorted((data_dir / "test" / KNOWN).glob("*.jpg")),
        lambda view: view["title"] == KNOWN,
        f"named {KNOWN}",
    )
    unknown = first_answered(
        world[0],
        sorted((data_dir / "extra_classes" / UNKNOWN).glob("*.jpg")),
        lambda view: view["is_novel"],
        "flagged as unknown",
    )
    return {"known": known, "unknown": unknown}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots: {folder}")
    return folder


@pytest.fixture
def phone(browser, world):
    phone = Phone(browser, world[0])
    yield phone
    assert phone.console_errors == []  # no CSP violation, no script error
    phone.close()


def test_a_photo_of_a_known_fruit_is_named_with_alternatives_neighbours_and_the_map(
    phone, world, photos, shots
) -> None:
    phone.page.set_input_files("#photo", str(photos["known"]))
    assert phone.answer() == KNOWN
    page = phone.page
    assert page.locator("#answer-message").inner_text().endswith("% sure")
    assert page.locator("#answer-top li").count() == 2  # the top 3, less the answer itself
    assert page.locator("#answer-neighbours img").count() >= 3
    assert all(phone.images_loaded("#answer-neighbours img, #answer-photo, #answer-map"))
    upload_id = page.url.rsplit("/u/", 1)[1]
    stored = open_answer_store(world[1]).get(upload_id)  # what the stream wrote, shown as is
    assert stored.status == ANSWERED and stored.prediction == KNOWN and stored.neighbours
    screenshot(phone, shots, "answer")


def test_a_fruit_the_model_never_learnt_is_a_fruit_it_does_not_know_yet(phone, photos, shots) -> None:
    phone.page.set_input_files("#photo", str(photos["unknown"]))
    assert phone.answer() == "A fruit I don't know yet"
    assert "looks a little like" in phone.page.locator("#answer-message").inner_text()
    screenshot(phone, shots, "unknown")


def test_a_text_file_named_jpg_is_refused_in_plain_words(phone, world, tmp_path, shots) -> None:
    fake = tmp_path / "shopping.jpg"
    fake.write_text("kumquats, limes, a pineapple\n" * 20)
    phone.page.set_input_files("#photo", str(fake))
    status = phone.page.locator("#status")
    phone.page.wait_for_function("() => document.getElementById('status').classList.contains('problem')")
    assert "not an image" in status.inner_text()
    assert phone.page.locator("#answer").is_hidden()
    assert not list((Path(world[1].source_uri) / "app").rglob("*shopping*"))
    phone.console_errors.clear()  # the refused POST's 415 is logged by the browser as a failed resource
    screenshot(phone, shots, "not-an-image")


def test_keyboard_only_tab_to_consent_and_to_the_button_then_enter_opens_the_chooser(
    phone, world, photos, shots
) -> None:
    page = phone.page
    focused = []
    # Listening for the chooser from the start: Playwright turns the interception on without waiting
    # for it, and on a busy machine an Enter right after could reach a browser not yet intercepting.
    with page.expect_file_chooser(timeout=120_000) as chooser:
        for _ in range(6):  # the brand link, the consent box, the photo button
            page.keyboard.press("Tab")
            focused.append(page.evaluate("document.activeElement.id"))
            if focused[-1] == "consent":
                page.keyboard.press("Space")
            if focused[-1] == "photo":
                break
        assert focused[-1] == "photo" and "consent" in focused
        assert page.locator("#consent").is_checked()
        outline = page.eval_on_selector(".big-button", "b => getComputedStyle(b).outlineStyle")
        assert outline == "solid"  # the focused button shows it
        page.keyboard.press("Enter")
    chooser.value.set_files(str(photos["known"]))
    assert phone.answer() == KNOWN
    upload_id = page.url.rsplit("/u/", 1)[1]
    assert (Path(world[1].source_uri) / "app" / "consented" / f"{upload_id}.jpg").is_file()  # consent ticked


def test_ops_shows_the_stream_numbers_and_refreshes_itself(browser, world, shots) -> None:
    phone = Phone(browser, world[0] + "/ops")
    page = phone.page
    # The stream mirrors its progress every few seconds: wait until the uploads above are counted.
    page.wait_for_function(
        "() => Number(document.querySelector('[data-key=answers]').textContent) >= 3 && "
        f"document.getElementById('ops-class_mix').textContent.includes({KNOWN!r})",
        timeout=120_000,
    )
    assert float(page.locator("[data-key=answer_latency_p95_s]").inner_text().removesuffix(" s")) > 0
    assert page.locator("[data-key=model_version]").inner_text().isdigit()
    first = page.locator("#ops-status").inner_text()
    page.wait_for_function(f"() => document.getElementById('ops-status').textContent !== {first!r}", timeout=30_000)
    screenshot(phone, shots, "ops")
    assert phone.console_errors == []
    phone.close()


def test_a_person_says_no_it_is_another_fruit_and_the_vote_is_recorded(phone, world, photos, shots) -> None:
    page = phone.page
    page.locator("#consent").check()  # only photos shared to improve the model are asked about
    page.set_input_files("#photo", str(photos["known"]))
    assert phone.answer() == KNOWN
    assert page.locator("#vote-question").inner_text() == "Is it right?"
    page.locator("#vote-no").click()
    page.locator("#vote-name").fill("  kumquat")  # a typo of a fruit the model knows
    page.locator("#vote-send").click()
    page.wait_for_function("() => document.getElementById('vote-status').textContent.includes('recorded')")
    assert "Kumquats" in page.locator("#vote-status").inner_text()
    upload_id = page.url.rsplit("/u/", 1)[1]
    rows = table_rows(world[1].labels_uri)  # the vote log, read with delta-rs alone
    assert [(r.upload_id, r.label) for r in rows] == [(upload_id, "Kumquats")]
    screenshot(phone, shots, "vote")
