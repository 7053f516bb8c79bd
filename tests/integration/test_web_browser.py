"""The web pages in a real browser: Debian's headless chromium driven by selenium through a
real ``qtoaster run --http --pop3``, then the effect proved over SMTP (smtplib) and POP3
(poplib) against the same server (docs/http.md "Web pages").

The domain administrator (postmaster@example.test) logs in, adds a user, sets its quota,
adds an alias to it and sets its vacation message, and logs out; the user logs in, finds
the administration pages closed to it, and changes its password.  Then mail to the alias
arrives in the user's Maildir, read over POP3 with the new password (the old one fails),
and two messages from one sender get exactly one vacation reply at the sender's server
(a recording peer, tests/smtppeer.py, reached through control/smtproutes).

Artifacts: a screenshot of each page visited, ``NN-name.png``, is saved under the test's
pytest tmp dir (``screens/``) and, if the environment variable ``QTOASTER_ARTIFACTS``
names a directory, copied there too (made if missing), so CI can keep them.

Skipped, saying so, only when chromium or chromedriver is not installed
(``scripts/setup --test`` installs both).
"""

from __future__ import annotations

import os
import poplib
import shutil
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from tests.smtppeer import SmtpPeer

from .harness import Server, make_home, qt, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (scripts/setup --test)",
)
WAIT = 20  # seconds: the bound of every browser wait


class Browser:
    """A headless chromium at phone width, saving a screenshot of each page it shows."""

    def __init__(self, base: str, screens: Path, profile: Path) -> None:
        options = webdriver.ChromeOptions()
        assert CHROMIUM is not None and CHROMEDRIVER is not None
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",  # as root in a container
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",  # the home's own self-signed certificate
            "--window-size=412,1400",  # a phone's width: the pages' one-column layout
            f"--user-data-dir={profile}",
        ):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.base = base
        self.screens = screens
        self.shots = 0
        self.wait = WebDriverWait(self.driver, WAIT)

    def shot(self, name: str) -> None:
        self.shots += 1
        path = self.screens / f"{self.shots:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path))
        artifacts = os.environ.get("QTOASTER_ARTIFACTS")
        if artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(artifacts) / path.name)

    def open(self, path: str, name: str) -> None:
        self.driver.get(self.base + path)
        self.wait.until(ec.presence_of_element_located((By.TAG_NAME, "main")))
        self.shot(name)

    def fill(self, **fields: str) -> None:
        for element_id, text in fields.items():
            box = self.driver.find_element(By.ID, element_id.replace("_", "-"))
            box.clear()
            box.send_keys(text)

    def submit(self, button: str, name: str, done: str | None = None) -> None:
        """Click ``button``; wait for the next page (with ``done`` said, if given)."""
        old = self.driver.find_element(By.TAG_NAME, "main")
        self.driver.find_element(By.ID, button).click()
        self.wait.until(ec.staleness_of(old))
        self.wait.until(ec.presence_of_element_located((By.TAG_NAME, "main")))
        if done is not None:
            self.wait.until(ec.text_to_be_present_in_element((By.ID, "done"), done))
        self.shot(name)

    def login(self, user: str, password: str, name: str) -> None:
        self.open("/", "login")
        self.fill(user=user, password=password)
        self.submit("login-button", name)
        self.wait.until(ec.text_to_be_present_in_element((By.ID, "login"), user))

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "main").text)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Server, SmtpPeer, Browser]]:
    peer = SmtpPeer("127.0.0.1").start()
    home = make_home(tmp_path)
    (home / "control" / "smtproutes").write_text(f"sender.test:127.0.0.1:{peer.port}\n")
    qt(home, "user", "passwd", "postmaster@example.test", "--password", "pm-secret")
    server = Server(home, "--http", "127.0.0.1:0", "--pop3", "127.0.0.1:0", workers=1)
    screens = tmp_path / "screens"
    screens.mkdir()
    browser = None
    try:
        browser = Browser(f"https://127.0.0.1:{server.ports['http']}", screens, tmp_path / "p")
        yield server, peer, browser
    finally:
        if browser is not None:
            browser.driver.quit()
        server.stop()
        peer.stop()


def administer(b: Browser) -> None:
    """As postmaster@example.test: add zoe, her quota, an alias and her vacation reply."""
    b.login("postmaster@example.test", "pm-secret", "domain")
    assert b.driver.current_url.endswith("/domains/example.test")
    b.fill(new_name="zoe", new_password="first-pw", new_quota="")
    b.submit("add-user-button", "user-added", "User added.")
    assert "zoe@example.test" in b.text()
    b.driver.find_element(By.LINK_TEXT, "zoe@example.test").click()
    b.wait.until(ec.presence_of_element_located((By.ID, "quota-form")))
    b.shot("user")
    b.fill(quota="20M")
    b.submit("quota-button", "quota-set", "Quota set.")
    assert "of 20.0 MB" in b.text()
    b.open("/domains/example.test", "domain-again")
    b.fill(alias_name="sales", alias_targets="zoe@example.test")
    b.submit("add-alias-button", "alias-added", "Alias added.")
    aliases = b.driver.find_element(By.ID, "aliases").text
    assert "sales@example.test" in aliases and "zoe@example.test" in aliases
    b.open("/users/zoe@example.test", "user-again")
    enabled = b.driver.find_element(By.ID, "vacation-enabled")
    if not enabled.is_selected():
        enabled.click()
    b.fill(vacation_subject="Away", vacation_body="I am away until Monday.")
    b.submit("vacation-button", "vacation-set", "Vacation reply saved.")
    assert b.driver.find_element(By.ID, "vacation-enabled").is_selected()
    b.submit("logout", "logged-out")
    b.wait.until(ec.presence_of_element_located((By.ID, "login-button")))


def self_service(b: Browser) -> None:
    """As zoe: the administration pages are closed; change the password."""
    b.login("zoe@example.test", "first-pw", "self")
    assert b.driver.current_url.endswith("/users/zoe@example.test")
    assert not b.driver.find_elements(By.ID, "quota-form")
    b.open("/domains/example.test", "refused")
    assert "needs a site or domain administrator" in b.text()
    b.open("/users/zoe@example.test", "self-again")
    b.fill(new_password="second-pw", new_password_again="second-pw")
    b.submit("password-button", "password-changed", "Password changed.")
    b.submit("logout", "logged-out-user")


def message(to: str, subject: str) -> bytes:
    return (
        f"From: dave@sender.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@sender.test>\r\n\r\nhello\r\n"
    ).encode()


def pop3_subjects(server: Server, password: str) -> list[str]:
    pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=30)
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the home's own certificate
    try:
        pop.stls(context=tls)
        pop.user("zoe@example.test")
        pop.pass_(password)
        subjects = []
        for number in range(1, pop.stat()[0] + 1):
            lines = pop.retr(number)[1]
            subjects += [ln.decode()[9:] for ln in lines if ln.startswith(b"Subject: ")]
        return subjects
    finally:
        pop.quit()


def test_admin_and_user_pages_then_smtp_and_pop3(
    setup: tuple[Server, SmtpPeer, Browser],
) -> None:
    server, peer, browser = setup
    administer(browser)
    self_service(browser)

    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.sendmail(
            "dave@sender.test", ["sales@example.test"], message("sales@example.test", "to-alias")
        )
        smtp.sendmail(
            "dave@sender.test", ["zoe@example.test"], message("zoe@example.test", "first")
        )
        smtp.sendmail(
            "dave@sender.test", ["zoe@example.test"], message("zoe@example.test", "second")
        )

    found: list[str] = []

    def three() -> bool:
        found[:] = pop3_subjects(server, "second-pw")
        return len(found) == 3

    wait_until(three, 30, "three messages for zoe over POP3")
    assert sorted(found) == ["first", "second", "to-alias"]
    with pytest.raises(poplib.error_proto, match="-ERR"):
        pop3_subjects(server, "first-pw")  # at PASS: USER and STLS succeeded above

    [reply] = peer.wait_for(1, 30)
    assert (reply.sender, reply.recipients) == ("", ("dave@sender.test",))
    assert b"\r\nAuto-Submitted: auto-replied\r\n" in reply.data
    assert b"\r\nSubject: Away\r\n" in reply.data and b"I am away until Monday." in reply.data
    log = server.home / "server.log"

    def answered_already() -> bool:
        text = log.read_text(errors="replace")
        return 'user=zoe@example.test to=dave@sender.test why="answered already"' in text

    # The reply to dave is recorded before any later message is delivered, so once a
    # later one was skipped no other reply can follow.
    wait_until(answered_already, 30, "the second message not answered")
    assert len(peer.messages) == 1
    assert browser.shots >= 12
