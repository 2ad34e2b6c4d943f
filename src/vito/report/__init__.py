"""``vito report``: every evaluation of a suite for every encoder, as the paper's tables (HTML, markdown, JSON)."""
