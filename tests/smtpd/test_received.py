from qtoaster.smtpd.received import qmail_date, received_header


def test_date_is_qmails_utc_form() -> None:
    assert qmail_date(812090814) == "26 Sep 1995 04:46:54 -0000"
    assert qmail_date(0) == "1 Jan 1970 00:00:00 -0000"


def test_header_layout_byte_for_byte() -> None:
    header = received_header(
        remotehost="unknown",
        helo="client.example",
        remoteip="192.0.2.7",
        local="mx.example.com",
        when=812090814,
    )
    assert header == (
        b"Received: from unknown (HELO client.example) (192.0.2.7)\n"
        b"  by mx.example.com with SMTP; 26 Sep 1995 04:46:54 -0000\n"
    )


def test_helo_omitted_when_equal_to_remote_host_and_ident_shown() -> None:
    header = received_header(
        remotehost="Client.Example",
        helo="client.example",
        remoteip="192.0.2.7",
        local="mx",
        when=0,
        remoteinfo="joe",
    )
    assert header.startswith(b"Received: from Client.Example (joe@192.0.2.7)\n")


def test_unsafe_bytes_become_question_marks_so_no_header_injection() -> None:
    header = received_header(
        remotehost="unknown",
        helo="evil\r\nX-Injected: yes <b>",
        remoteip="192.0.2.7",
        local="mx",
        when=0,
    )
    assert b"(HELO evil??X-Injected:?yes??b?)" in header
    assert header.count(b"\n") == 2
