"""The law: the cross-boundary transfer engine, its rules and evidence validity. Pure: no SQL, HTTP or I/O
beyond reading the packaged rules file."""
