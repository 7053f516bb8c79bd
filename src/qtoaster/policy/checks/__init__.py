"""One module per check, named after the qmail control file or feature it implements."""
