"""MaildirStore/MaildirView over LocalFs: folders, APPEND, STORE, EXPUNGE, COPY/MOVE,
refresh after other clients, quota, and the storeapi Protocols (checked by mypy)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qtoaster.maildir.create import make_maildir
from qtoaster.maildir.fs import LocalFs
from qtoaster.maildir.quota import Quota, read_maildirsize
from qtoaster.maildir.store import MaildirStore
from qtoaster.maildir.storeapi import (
    DELETED,
    FLAGGED,
    SEEN,
    MailFs,
    Store,
    StoreError,
    View,
)
from qtoaster.maildir.view import MaildirView

MSG = b"Subject: hi\n\nbody\n"


def new_store(tmp_path: Path, quota: Quota | None = None) -> tuple[MaildirStore, Path]:
    root = tmp_path / "dom" / "user" / "Maildir"
    make_maildir(root)
    return MaildirStore(LocalFs(root, hostname="test.example", quota=quota)), root


def drop(root: Path, name: str, data: bytes, sub: str = "new") -> Path:
    path = root / sub / name
    path.write_bytes(data)
    return path


def test_protocols(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    _fs: MailFs = LocalFs(root, hostname="h", quota=None)
    _store: Store = store
    _view: View = store.select("INBOX", readonly=True)
    assert isinstance(_view, MaildirView)


def test_prepare_once(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.prepare()
    infos = {f.name: f for f in store.folders()}
    assert infos["Sent"].special_use == ("\\Sent",)
    assert infos["Junk"].subscribed and infos["INBOX"].selectable
    assert (root / ".Trash" / "maildirfolder").exists()
    store.delete("Trash")
    store.prepare()
    assert not (root / ".Trash").exists()


def test_prepare_keeps_delivery_junk(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    (root / ".Junk" / "new").mkdir(parents=True)  # half made, as an old delivery might
    drop(root / ".Junk", "1.M1P1.h,S=18", MSG)
    store.prepare()
    assert store.status("Junk").messages == 1


def test_append_select_fetch(tmp_path: Path) -> None:
    store, _root = new_store(tmp_path)
    uidvalidity, uid = store.append("INBOX", MSG, [SEEN, "$Forwarded"], 1_600_000_000.0)
    assert uid == 1
    view = store.select("INBOX", readonly=False)
    assert view.uidvalidity == uidvalidity
    [meta] = view.messages
    assert meta.flags == {SEEN, "$Forwarded"}
    assert meta.size == len(MSG) + MSG.count(b"\n")
    assert meta.internaldate == 1_600_000_000
    [stream] = view.open_messages([1])
    assert stream is not None and stream.read() == MSG
    view.close()


def test_new_messages_recent_and_moved(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    drop(root, "100.M1P1.h,S=18", MSG)
    view = store.select("INBOX", readonly=False)
    assert [m.recent for m in view.messages] == [True]
    assert os.listdir(root / "new") == []
    assert os.listdir(root / "cur") == ["100.M1P1.h,S=18:2,"]
    again = store.select("INBOX", readonly=True)
    assert [m.recent for m in again.messages] == [False]


def test_store_flags_and_modseq(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.append("INBOX", MSG, [], None)
    view = store.select("INBOX", readonly=False)
    before = view.highestmodseq
    changed, refused = view.store([1], "+", [FLAGGED, "Work"], None)
    assert refused == [] and changed[0].flags == {FLAGGED, "Work"}
    assert changed[0].modseq > before
    [name] = os.listdir(root / "cur")
    assert name.endswith(":2,Fa")
    assert (root / "dovecot-keywords").read_bytes() == b"0 Work\n"
    _, refused = view.store([1], "-", ["Work"], before)
    assert refused == [1]
    # 30 keywords: 26 letters, the rest in the state
    words = [f"k{i}" for i in range(30)]
    changed, _ = view.store([1], "", words, None)
    assert changed[0].flags == set(words)
    other = store.select("INBOX", readonly=True)
    assert other.messages[0].flags == set(words)


def test_refresh_sees_other_sessions(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.append("INBOX", MSG, [], None)
    a = store.select("INBOX", readonly=False)
    b = store.select("INBOX", readonly=False)
    b.store([1], "+", [SEEN], None)
    store.append("INBOX", MSG, [], None)
    changes = a.refresh()
    assert [m.uid for m in changes.flags] == [1] and SEEN in changes.flags[0].flags
    assert [m.uid for m in changes.added] == [2]
    b.store([2], "+", [DELETED], None)
    b.expunge(None)
    assert b.refresh().expunged == (2,)
    assert a.refresh().expunged == (2,)
    a.apply(changes)
    # a rename by a client that keeps no state (flags), and a file removed (POP3 DELE)
    [name] = [n for n in os.listdir(root / "cur")]
    os.rename(root / "cur" / name, root / "cur" / (name.split(":")[0] + ":2,FS"))
    changes = a.refresh()
    assert changes.flags[0].flags == {SEEN, FLAGGED}
    os.unlink(root / "cur" / (name.split(":")[0] + ":2,FS"))
    assert a.refresh().expunged == (1,)
    assert a.vanished(0, None) == [1, 2]


def test_open_after_foreign_rename(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.append("INBOX", MSG, [], None)
    view = store.select("INBOX", readonly=True)
    [name] = os.listdir(root / "cur")
    os.rename(root / "cur" / name, root / "cur" / (name + "S"))
    [stream] = view.open_messages([1])
    assert stream is not None and stream.read() == MSG


def test_copy_move(tmp_path: Path) -> None:
    store, _root = new_store(tmp_path)
    store.create("Work")
    store.append("INBOX", MSG, [SEEN, "Blue"], 1_500_000_000.0)
    store.append("INBOX", MSG + b"x", [], None)
    view = store.select("INBOX", readonly=False)
    result = view.copy([1, 2], "Work")
    assert result.source_uids == (1, 2) and result.dest_uids == (1, 2)
    work = store.select("Work", readonly=True)
    assert work.messages[0].flags == {SEEN, "Blue"}
    assert work.messages[0].internaldate == 1_500_000_000
    moved = view.move([2], "Work")
    assert moved.dest_uids == (3,)
    assert view.refresh().expunged == (2,)
    with pytest.raises(StoreError) as info:
        view.copy([1], "Nope")
    assert info.value.code == "NONEXISTENT"


def test_folders_create_rename_delete(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.create("a.b", ["\\Archive"])
    assert (root / ".a.b" / "cur").is_dir()
    infos = {f.name: f for f in store.folders()}
    assert not infos["a"].selectable and infos["a"].has_children
    assert infos["a.b"].special_use == ("\\Archive",)
    with pytest.raises(StoreError) as info:
        store.create("a.b")
    assert info.value.code == "ALREADYEXISTS"
    store.create("a")
    store.rename("a", "c")
    assert (root / ".c.b").is_dir() and not (root / ".a").exists()
    assert {f.name for f in store.folders()} == {"INBOX", "c", "c.b"}
    store.subscribe("c.b", True)
    assert (root / "subscriptions").read_text() == "c.b\n"
    store.delete("c.b")
    for bad in ("", "x..y", ".x", "a/b", "..", "a.\u0000", "a\\b"):
        with pytest.raises(StoreError) as info:
            store.create(bad)
        assert info.value.code == "CANNOT"


def test_rename_inbox(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.append("INBOX", MSG, [SEEN], None)
    drop(root, "5.M1P1.h", MSG)
    store.rename("INBOX", "Old")
    assert store.status("Old").messages == 2
    assert store.status("INBOX").messages == 0


def test_unicode_folder(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.create("Entwürfe")
    assert (root / ".Entwürfe").is_dir()
    assert "Entwürfe" in {f.name for f in store.folders()}


def test_courier_subscriptions(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.create("Sent")
    (root / "courierimapsubscribed").write_text("INBOX\nINBOX.Sent\n")
    infos = {f.name: f for f in store.folders()}
    assert infos["Sent"].subscribed and infos["INBOX"].subscribed


def test_quota(tmp_path: Path) -> None:
    store, root = new_store(tmp_path, Quota(100, None))
    store.append("INBOX", MSG, [], None)
    assert store.quota().storage_used == len(MSG)
    with pytest.raises(StoreError) as info:
        store.append("INBOX", b"x" * 200, [], None)
    assert info.value.code == "OVERQUOTA"
    view = store.select("INBOX", readonly=False)
    view.store([1], "+", [DELETED], None)
    view.expunge(None)
    found = read_maildirsize(root)
    assert found is not None and found[1].bytes == 0 and found[1].messages == 0


def test_status(tmp_path: Path) -> None:
    store, root = new_store(tmp_path)
    store.append("INBOX", MSG, [SEEN], None)
    store.append("INBOX", MSG, [DELETED], None)
    drop(root, "9.M1P1.h", MSG)
    status = store.status("INBOX")
    assert (status.messages, status.recent, status.unseen, status.deleted) == (3, 1, 2, 1)
    assert status.uidnext == 4 and status.size == 3 * (len(MSG) + 3)
    with pytest.raises(StoreError):
        store.status("Missing")


def test_readonly_refuses(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path)
    store.append("INBOX", MSG, [], None)
    view = store.select("inbox", readonly=True)
    assert view.name == "INBOX"
    with pytest.raises(StoreError):
        view.store([1], "+", [SEEN], None)


def test_store_with_fs_typed(tmp_path: Path) -> None:
    root = tmp_path / "M"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    store = MaildirStore(LocalFs(root, hostname="h", quota=None))
    assert store.folders()[0].name == "INBOX"
