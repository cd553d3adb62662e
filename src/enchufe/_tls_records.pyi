"""Types of the optional compiled module ``enchufe._tls_records`` (see ``_tls_records.c``)."""

def bind(
    read_ex: int | None, get_error: int | None, peek_last_error: int | None, clear_error: int | None
) -> None: ...
def read_records(
    ssl: int, buffer: memoryview, offset: int, record: int, largest: int
) -> tuple[int, int, int, int]: ...
