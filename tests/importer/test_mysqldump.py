"""The mysqldump parser on the shapes mysqldump and people write."""

from __future__ import annotations

import pytest

from qtoaster.importer.mysqldump import DumpError, parse_dump


def test_escapes_multirow_and_column_lists() -> None:
    text = (
        "/*!40101 SET NAMES utf8 */;\n# comment\n-- another; with semicolon\n"
        "CREATE TABLE IF NOT EXISTS `db`.`t` (\n  `a` int,\n  `we``ird` text,\n"
        "  UNIQUE KEY `k` (`a`), CHECK (a > 0)\n) ENGINE=InnoDB;\n"
        "INSERT INTO `db`.`t` VALUES (1,'it\\'s; \\\\ \\n \\0 \\Z x'),"
        "(-2,\"dq \"\" ''\"),(3,NULL),(4,0x41C3A9),(5,_utf8mb4'intro'),(6,'raw\nline');\n"
        "INSERT IGNORE INTO t2 (x) VALUES (1.5) ON DUPLICATE KEY UPDATE x=1;\n"
        "REPLACE INTO t2 (x) VALUES ('r');\n"
        "DROP TABLE `other`;\n"
    )
    tables = parse_dump(text)
    assert tables["t"].columns == ["a", "we`ird"]
    rows = [row["we`ird"] for row in tables["t"].rows]
    assert rows == ["it's; \\ \n \0 \x1a x", "dq \" ''", None, "Aé", "intro", "raw\nline"]
    assert [row["a"] for row in tables["t"].rows] == [1, -2, 3, 4, 5, 6]
    assert tables["t2"].rows == [{"x": 1.5}, {"x": "r"}]
    assert "other" not in tables


@pytest.mark.parametrize(
    "text",
    [
        "INSERT INTO t VALUES ('a);",
        "INSERT INTO t (a) VALUES (1,2);",
        "INSERT INTO t (a) VALUES (oops);",
        "INSERT INTO t (a) (1);",
        "/* never closed",
    ],
)
def test_errors(text: str) -> None:
    with pytest.raises(DumpError):
        parse_dump(text)
