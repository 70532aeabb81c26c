"""Access: requests for licensed access, their reviews, grants and the mechanism evidence they rely on."""
