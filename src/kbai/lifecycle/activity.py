"""Token activity: requests per hour over the last 30 days, an hour-of-week heatmap, and "outside usual hours".

Everything is read from ``token_usage_hourly`` (written in batches by :mod:`kbai.tokens.usage`, so it
lags by at most one flush interval) and is in UTC: hour-of-week cells are (weekday, hour) with
Monday = 0 and hours 0-23 UTC.

**Outside usual hours**, precisely: the token's *usual hours* are the hour-of-week cells in which it
made at least one request during its first 14 days (usage hours starting before ``created_at`` +
14 days). Once those 14 days are over, ``outside_usual_hours`` is true when, within the 30-day
window, the token made a request in an hour that starts at or after ``created_at`` + 14 days and
whose cell is not one of its usual hours. While the first 14 days last, or when the token was not
used in them (no usual hours to compare with), the flag is false and ``usual_hours_known`` says why.

:func:`heatmap_svg` renders a 7 x 24 grid as an inline SVG that needs no script and no style
attribute (colours are SVG presentation attributes), so it can be embedded under a CSP of
``style-src 'self'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from sqlalchemy import select

from kbai import errors
from kbai.access.catalog import MANAGE_SERVICE_TOKENS, REVIEW_TOKENS
from kbai.clock import Clock, utc_seconds
from kbai.errors import KbaiError
from kbai.store import Database
from kbai.store.audit import Actor
from kbai.store.models import Token, TokenUsageHour

WINDOW_DAYS = 30
BASELINE_DAYS = 14
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class HourCount:
    hour: datetime  # the start of a UTC hour
    requests: int


@dataclass(frozen=True)
class Activity:
    token_id: int
    since: datetime  # first hour of the window (inclusive)
    until: datetime  # end of the window (exclusive): the end of the current hour
    hourly: list[HourCount]  # hours with at least one request, oldest first
    grid: list[list[int]]  # grid[weekday][hour], Monday = 0, UTC
    total: int
    last_used_at: datetime | None
    last_used_ip: str | None
    last_used_user_agent: str | None
    usual_hours_known: bool
    outside_usual_hours: bool
    unusual_hours: list[tuple[int, int]]  # the (weekday, hour) cells that set the flag
    # Requests refused by the token's IP allowlist (all time), and the latest one's time and address.
    refused: int = 0
    last_refused_at: datetime | None = None
    last_refused_ip: str | None = None
    allowed_ips: list[str] | None = None


def hour_of_week(hour: datetime) -> tuple[int, int]:
    return hour.weekday(), hour.hour


class ActivityService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def for_token(self, actor: Actor, token_id: int) -> Activity:
        """The owner (with a session) or a reviewer of the token's tenant may see it; anyone else gets 404."""
        now = utc_seconds(self.clock.now())
        until = now.replace(minute=0, second=0) + timedelta(hours=1)
        since = until - timedelta(days=WINDOW_DAYS)
        with self.db.read() as s:
            token = s.get(Token, token_id) if 1 <= token_id <= 2_147_483_647 else None
            if token is None:
                raise KbaiError(errors.NOT_FOUND, what="Token")
            _may_see(actor, token)
            baseline_end = token.created_at + timedelta(days=BASELINE_DAYS)
            first = min(since, token.created_at.replace(minute=0, second=0))
            rows = s.execute(
                select(TokenUsageHour.hour, TokenUsageHour.requests)
                .where(TokenUsageHour.token_id == token.id, TokenUsageHour.hour >= first, TokenUsageHour.hour < until)
                .order_by(TokenUsageHour.hour)
            ).all()
            ip, agent, last_used = token.last_used_ip, token.last_used_user_agent, token.last_used_at
            refused = (
                int(token.refused_count or 0),
                token.last_refused_at,
                token.last_refused_ip,
                list(token.allowed_ips) if token.allowed_ips else None,
            )
        usual = {hour_of_week(h) for h, n in rows if h < baseline_end and n > 0}
        hourly = [HourCount(h, int(n)) for h, n in rows if h >= since]
        grid = [[0] * 24 for _ in range(7)]
        for item in hourly:
            day, hour = hour_of_week(item.hour)
            grid[day][hour] += item.requests
        known = now >= baseline_end and bool(usual)
        unusual: list[tuple[int, int]] = []
        if known:
            for item in hourly:
                cell = hour_of_week(item.hour)
                if item.hour >= baseline_end and item.requests > 0 and cell not in usual and cell not in unusual:
                    unusual.append(cell)
        return Activity(
            token_id=token_id,
            since=since,
            until=until,
            hourly=hourly,
            grid=grid,
            total=sum(h.requests for h in hourly),
            last_used_at=last_used,
            last_used_ip=ip,
            last_used_user_agent=agent,
            usual_hours_known=known,
            outside_usual_hours=bool(unusual),
            unusual_hours=sorted(unusual),
            refused=refused[0],
            last_refused_at=refused[1],
            last_refused_ip=refused[2],
            allowed_ips=refused[3],
        )


def _may_see(actor: Actor, token: Token) -> None:
    """Its owner (with a session), a reviewer of the tenant's tokens, for a service token every holder of
    developer.manage_service_tokens in its tenant, and the operator; 404 for anyone else."""
    if actor.kind == "operator":
        return
    same_tenant = actor.tenant_id == token.tenant_id
    if actor.kind in ("user", "token") and REVIEW_TOKENS in actor.permissions and same_tenant:
        return
    if token.user_id is None:  # a service token: no owner to compare (a null user_id matches nobody)
        if actor.kind == "user" and MANAGE_SERVICE_TOKENS in actor.permissions and same_tenant:
            return
        if actor.kind == "token" and actor.token_id == token.id:
            raise KbaiError(errors.SESSION_REQUIRED, action="read token activity")
    elif actor.user_id == token.user_id:
        if actor.kind == "user":
            return
        if actor.kind == "token":
            raise KbaiError(errors.SESSION_REQUIRED, action="read token activity")
    raise KbaiError(errors.NOT_FOUND, what="Token")


# ---- the heatmap as SVG ---------------------------------------------------------------------------
CELL = 16
GAP = 2
LEFT = 36
TOP = 18
# Light to dark; index 0 is "no requests". Chosen to stay readable in both light and dark themes.
SHADES = ("#ebedf0", "#c6e2f7", "#8cc4ee", "#4a9ee0", "#1f6fb8", "#0b3f73")


def shade(count: int, peak: int) -> str:
    if count <= 0 or peak <= 0:
        return SHADES[0]
    step = 1 + min(len(SHADES) - 2, (count * (len(SHADES) - 1) - 1) // peak)
    return SHADES[step]


def heatmap_svg(grid: Sequence[Sequence[int]], *, title: str = "Requests per hour of the week (UTC)") -> str:
    """A 7 x 24 grid (``grid[weekday][hour]``, Monday first) as a standalone, accessible SVG.

    No script, no ``style`` attribute, no external reference: every colour is a presentation
    attribute, and every text node and attribute value is escaped. Each cell has a ``<title>``
    ("Tue 14:00-15:00 UTC: 12 requests") that browsers show as a tooltip.
    """
    if len(grid) != 7 or any(len(row) != 24 for row in grid):
        raise ValueError("grid must be 7 rows (Monday first) of 24 hourly counts")
    counts = [[int(c) for c in row] for row in grid]
    if any(c < 0 for row in counts for c in row):
        raise ValueError("counts cannot be negative")
    peak = max(max(row) for row in counts)
    width = LEFT + 24 * (CELL + GAP)
    height = TOP + 7 * (CELL + GAP)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(title)} class="kbai-heatmap">',
        f"<title>{escape(title)}</title>",
    ]
    for hour in range(0, 24, 3):
        x = LEFT + hour * (CELL + GAP)
        parts.append(f'<text x="{x}" y="{TOP - 6}" font-size="10" fill="#57606a">{hour:02d}</text>')
    for day, row in enumerate(counts):
        y = TOP + day * (CELL + GAP)
        parts.append(f'<text x="0" y="{y + CELL - 4}" font-size="10" fill="#57606a">{DAYS[day]}</text>')
        for hour, count in enumerate(row):
            x = LEFT + hour * (CELL + GAP)
            label = (
                f"{DAYS[day]} {hour:02d}:00-{(hour + 1) % 24:02d}:00 UTC: {count} request{'s' if count != 1 else ''}"
            )
            parts.append(
                f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" rx="2" fill="{shade(count, peak)}" '
                f'data-weekday="{day}" data-hour="{hour}" data-count="{count}"><title>{escape(label)}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)
