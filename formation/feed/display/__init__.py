"""The ageing-room wall display: a page built only from the feed, pushed to browsers over server-sent events."""

from formation.feed.display.server import DisplayServer
from formation.feed.display.service import WallDisplay, page_html
from formation.feed.display.state import DEFAULT_INTERVAL_S, STALE_INTERVALS, FeedView, Health

__all__ = ["DEFAULT_INTERVAL_S", "STALE_INTERVALS", "DisplayServer", "FeedView", "Health", "WallDisplay", "page_html"]
