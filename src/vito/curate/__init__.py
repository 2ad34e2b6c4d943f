"""VideoNet curation: title matching, duration and classifier filters, a resumable sharded pipeline."""
