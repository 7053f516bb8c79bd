"""Property tests: what mysqldump writes, the parser reads back; garbage raises DumpError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qtoaster.importer.mysqldump import DumpError, parse_dump

values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
)
columns = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz_`", min_size=1, max_size=8), min_size=1, max_size=5
)


def _literal(value: str | int | None) -> str:
    """As mysqldump's escaping (mysql_real_escape_string)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    table = {
        "\\": "\\\\",
        "'": "\\'",
        '"': '\\"',
        "\0": "\\0",
        "\n": "\\n",
        "\r": "\\r",
        "\x1a": "\\Z",
    }
    return "'" + "".join(table.get(ch, ch) for ch in value) + "'"


@given(st.data(), columns.filter(lambda c: len(set(c)) == len(c)))
def test_round_trip(data: st.DataObject, names: list[str]) -> None:
    rows = data.draw(st.lists(st.tuples(*[values for _ in names]), max_size=6))
    quoted = ["`" + n.replace("`", "``") + "`" for n in names]
    text = "CREATE TABLE `t` (\n" + ",\n".join(f"  {q} text" for q in quoted) + "\n);\n"
    if rows:
        body = ",".join("(" + ",".join(_literal(v) for v in row) + ")" for row in rows)
        text += f"INSERT INTO `t` VALUES {body};\n"
    table = parse_dump(text)["t"]
    assert table.columns == names
    assert [tuple(r[n] for n in names) for r in table.rows] == rows


@given(st.text(max_size=200))
def test_garbage_never_crashes(text: str) -> None:
    try:
        parse_dump(text)
    except DumpError:
        pass


@given(st.text(max_size=60))
def test_insert_prefix_garbage(tail: str) -> None:
    try:
        parse_dump("INSERT INTO `t` (`a`) VALUES " + tail)
    except DumpError:
        pass
