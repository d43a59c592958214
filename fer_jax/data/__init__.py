"""FER-2013 in: download, read (zip, folder, CSV) onto one label order, cache, check, and augment."""
