"""The live timeline: the ring's new records folded into lanes x time columns,
and drawn as a PNG without building a Trace.

    strip = Strip(window=5.0, columns=1200, hub_id=..., main_id=...)
    strip.add(raw_bytes, now_ns)        # only the records read since the last call
    picture = Picture(size=(10, 5), max_lanes=10, window=5.0)
    png = picture.render(strip, names, blocks, now_ns)

Why not ``Trace.timeline()``: a live view redrawn every second rebuilt a
Trace of its whole window each time (every record decoded in Python again,
~5 times over for a 5 s window) and drew it with matplotlib (~100 ms holding
the GIL): under an echo server with 50 clients that cost the server ~3x its
CPU per message. Here:

- :class:`Strip` paints what the ledger's fold says of each record once
  (its Slices: runs and waits), into one column per pixel of the picture:
  per lane the nanoseconds it ran in each column, the kind of wait that
  ended in it (the legend's colours), and late sleeps; per column the
  switches and the longest ready queue. The columns are a ring over
  absolute time (a column is ``window / columns`` ns), so a refresh only
  writes the columns its new records fall in, and the lanes are kept
  between frames. The painting is C (loop_c/lk_strip.c: two calls a
  batch, no Python per record but for spawns and exits, and no GIL held:
  ~45 ns a record where numpy's ~30 passes took ~100-300;
  ``python -m labkit bench --only strip_paint``).
- :class:`Picture` draws the axes, ticks and legend once with matplotlib
  (the x axis is "seconds before now", so it does not move) and, per frame,
  paints the lanes into a copy of that background with numpy and writes
  the lane names with Pillow (the PNG encoder releases the GIL).

What it shows is the plot module's picture (:mod:`tracing.plot`) at pixel
resolution: running is dark (a greenlet that ran at all within a pixel's
time shows in that pixel, so short slices are never lost), a wait is a
light bar in the colour of what ended it, drawn over the pixels it
covered, late sleeps are hatched orange with a tick at the due time,
blocks found by the blocking monitor are red on the lane of the greenlet
that ran most during them. Lanes: poll, hub, then the ``max_lanes``
greenlets that ran longest in the window, in order of first appearance
(stable from frame to frame).

A lane is a greenlet id: CPython reuses the id of a greenlet that exited,
and a greenlet spawned under a reused id starts a new lane (the old one
keeps its history until it scrolls out).

Threads: :class:`Strip` and :class:`Picture` are used from one thread (the
dashboard's); neither touches the hub.
"""
from __future__ import annotations

import io
import os

import numpy as np

from labkit._loop import ffi, lib

from tracing import ledger as _ledger
from tracing import legend
from tracing.ledger import OWNER_HUB, OWNER_POLL
from tracing.lanes import HUB, POLL

#: The raw record layout (tracing.recorder._RECORD, "=qIIqq"): the ledger's
#: (one home for how the ring is read with numpy).
RECORD_DTYPE = _ledger.RECORD_DTYPE


def _c(array: np.ndarray):
    """An ``int64_t *`` to ``array``'s values, for loop_c/lk_strip.c: its
    own data when it is a contiguous int64 array (the C fold's Slices and
    the lanes are), or a copy's (the cdata keeps whichever alive)."""
    return ffi.from_buffer("int64_t[]", np.ascontiguousarray(array, np.int64))


#: Wait kinds painted on a lane, by code (0: nothing); the legend's keys.
KINDS = ("", "ready", "sleeping", "io", "other", "unstarted")
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}

#: Colours the background (axes, ticks, legend) is reduced to.
_BG_COLORS = 96
POLL_LANE, HUB_LANE = 0, 1


class Strip:
    """The last ``window`` seconds (plus ``history`` seconds kept for
    scrubbing back) as lanes x columns. See the module docstring.

    ``labels``: the recorder's label -> label id mapping (read for the kind
    of a Waiter's wait: "Event", an fd, "select"); ``hub_id``/``main_id``:
    ids of the hub and main greenlets (named, never recycled)."""

    def __init__(self, window: float, columns: int, hub_id: int, main_id: int,
                 labels=None, history: float = 0.0):
        if not window > 0:
            raise ValueError(f"window must be > 0, not {window!r}")
        if not (isinstance(columns, int) and columns >= 10):
            raise ValueError(f"columns must be an int >= 10, not {columns!r}")
        self.window_ns = int(window * 1e9)
        self.columns = columns
        self.col_ns = max(1, self.window_ns // columns)
        self.size = columns + int(max(0.0, history) * 1e9) // self.col_ns + 2
        self.hub_id, self.main_id = hub_id, main_id
        self.labels = labels if labels is not None else {}
        self.lane_of: dict[int, int] = {}       # greenlet id -> lane row
        self.gid_of: list = [POLL, HUB]          # lane row -> greenlet id (or POLL/HUB)
        self.spawn_index: dict[int, int] = {}   # lane row -> index in recorder.spawns
        self.first_seen: list = [0, 0]          # lane row -> order of first appearance
        self.exited: set = set()
        self._free: list = []
        self._seen = 2
        rows = 64
        self.run = np.zeros((rows, self.size), np.float32)   # ns running per column
        self.park = np.zeros((rows, self.size), np.uint8)    # KINDS code of a wait
        self.late = np.zeros((rows, self.size), np.uint8)    # 1 late sleep, 2 its due time
        self.switches = np.zeros(self.size, np.int32)
        self.ready = np.zeros(self.size, np.int32)           # longest ready queue
        self.last_col = None        # newest column written (absolute number)
        self._kind_cache: dict = {}
        self._c = None              # the lk_strip painted through (see _painter)
        self._keep: dict = {}       # what its pointers point into, kept alive
        self._known = None          # _lanes_of's sorted copy of lane_of, and its key
        self._label_of: dict = {}
        self.records = 0            # records painted so far
        self.lost = 0
        self._ledger = self._tap = None   # add()'s own (raw records)

    # -- taking folded records ---------------------------------------------------
    def add_slices(self, batches, now_ns: int, lost: int = 0) -> None:
        """Paint ``batches`` (:class:`tracing.ledger.Slices`, oldest first:
        what the ledger folded since the last call, from its
        :class:`~tracing.ledger.Tap`). ``now_ns``: the ring's clock now
        (columns up to it are cleared: the picture scrolls even when
        nothing runs); ``lost``: records the ring overwrote meanwhile."""
        self.lost += lost
        self._advance(now_ns // self.col_ns)
        for batch in batches:   # (each is two C calls: no need to join them first)
            self.records += batch.count
            self._take(batch)

    def add(self, data: bytes, now_ns: int, lost: int = 0) -> None:
        """Fold raw records ``data`` (read from a ring after those given
        before, oldest first) with this strip's own ledger, and paint them:
        for a strip without a running ledger to tap (a recording read
        elsewhere). A live view taps the recorder's ledger instead
        (:meth:`add_slices`), so that each record is folded once."""
        if self._ledger is None:
            from tracing.ledger import Ledger
            self._ledger = Ledger()
            self._tap = self._ledger.tap()
        self._ledger.fold(data)
        self.add_slices(self._tap.take(), now_ns, lost)

    def _take(self, batch) -> None:
        """One batch: spawns and exits one by one (few); a spawn under an
        id that has a lane already starts a new lane from that record on,
        so the runs and waits are painted in pieces split there."""
        cut = 0
        for seq, gid, index in zip(batch.spawn_seq.tolist(), batch.spawn_gid.tolist(),
                                   batch.spawn_index.tolist()):
            if gid in self.lane_of:
                self._paint(batch, cut, seq)
                cut = seq
                self.exited.add(self.lane_of.pop(gid))
            self.spawn_index[self._lane(gid)] = index
        self._paint(batch, cut, None)
        for gid in batch.exit_gid.tolist():
            lane = self.lane_of.get(gid)
            if lane is not None:
                self.exited.add(lane)

    def _advance(self, col: int) -> None:
        """Clear the columns after the newest one written, up to ``col``."""
        if self.last_col is None:
            self.last_col = col
            return
        if col <= self.last_col:
            return
        first, last = self.last_col + 1, col
        if last - first + 1 >= self.size:
            idx = slice(None)
        else:
            idx = np.arange(first, last + 1) % self.size
        self.run[:, idx] = 0
        self.park[:, idx] = 0
        self.late[:, idx] = 0
        self.switches[idx] = 0
        self.ready[idx] = 0
        self.last_col = col

    def _lane(self, gid: int) -> int:
        lane = self.lane_of.get(gid)
        if lane is None:
            if self._free:
                lane = self._free.pop()
                self.gid_of[lane] = gid
                self.first_seen[lane] = self._seen
            else:
                lane = len(self.gid_of)
                self.gid_of.append(gid)
                self.first_seen.append(self._seen)
                if lane >= self.run.shape[0]:
                    self._grow()
            self._seen += 1
            self.lane_of[gid] = lane
            self.spawn_index.pop(lane, None)
        return lane

    def _grow(self) -> None:
        rows = self.run.shape[0] * 2
        for name in ("run", "park", "late"):
            old = getattr(self, name)
            new = np.zeros((rows, self.size), old.dtype)
            new[:old.shape[0]] = old
            setattr(self, name, new)

    def _kind(self, why: int, detail: int) -> int:
        """The KINDS code of a wait that ended with a resume (why, detail)."""
        key = (why, detail)
        code = self._kind_cache.get(key)
        if code is None:
            from tracing.model import describe_reason
            if detail not in self._label_of:   # labels only grow: re-read on a miss
                self._label_of = {n: label for label, n in list(dict(self.labels).items())}
            reason = describe_reason(why, detail, self._label_of)
            code = self._kind_cache[key] = _KIND_CODE.get(legend.wait_kind(reason),
                                                          _KIND_CODE["other"])
        return code

    def _painter(self):
        """The ``lk_strip`` that loop_c/lk_strip.c paints through: this
        strip's layers and the wait kinds' tables, brought up to date
        (the layers move when they grow; labels only grow, numbered 0, 1,
        2, ... as they are met, so their table is only extended)."""
        c = self._c
        if c is None:
            c = self._c = ffi.new("lk_strip *")
            by_why = [self._kind(why, 0) for why in range(lib.LK_STRIP_WHYS)] \
                + [_KIND_CODE["other"]]          # (one more: any other why)
            by_why[lib.LK_WHY_SWITCH] = _KIND_CODE["ready"]    # a switch to it: ready
            self._keep["why"] = ffi.new("uint8_t[]", by_why)
            c.why_code = self._keep["why"]
            c.no_label_code = [self._kind(lib.LK_WHY_WAITER, -1),
                               self._kind(lib.LK_WHY_THROW, -1)]
            c.size, c.col_ns = self.size, self.col_ns
            c.late_ns = int(legend.LATE * 1e9)
            c.labels = 0
        if c.run != ffi.from_buffer(self.run):
            for name in ("run", "park", "late", "switches", "ready"):
                array = getattr(self, name)
                self._keep[name] = ffi.from_buffer(array)
                setattr(c, name, ffi.cast(ffi.typeof(getattr(c, name)), self._keep[name]))
        labels = len(self.labels)
        if labels > c.labels:
            tables = [bytes(ffi.buffer(c.label_code[k], c.labels)) if c.labels else b""
                      for k in range(2)]
            for k, why in enumerate((lib.LK_WHY_WAITER, lib.LK_WHY_THROW)):
                tables[k] += bytes(self._kind(why, n) for n in range(c.labels, labels))
                self._keep[f"labels{k}"] = ffi.new("uint8_t[]", tables[k])
                c.label_code[k] = self._keep[f"labels{k}"]
            c.labels = labels
        c.last_col = self.last_col
        return c

    def _paint(self, batch, lo: int, hi: int | None) -> None:
        """Runs, waits and counters of ``batch``'s entries from records
        ``lo`` (sequence number) up to ``hi`` (None: the end): one pass in
        loop_c/lk_strip.c, which states the rules. A wait's greenlet ran
        (its resume began a run here), so it has a lane."""
        r0, r1 = _span(batch.run_seq, lo, hi)
        w0, w1 = _span(batch.wait_seq, lo, hi)
        run_lane = self._lanes_of(batch.run_owner[r0:r1])
        wait_lane = self._lanes_of(batch.wait_owner[w0:w1])
        passes = len(batch.pass_ts) if lo == 0 else 0    # (passes need no lanes: once a batch)
        run = [_c(batch.run_start[r0:r1]), _c(batch.run_end[r0:r1])]
        wait = [_c(getattr(batch, name)[w0:w1])
                for name in ("wait_start", "wait_end", "wait_why", "wait_detail")]
        lib.lk_strip_paint(self._painter(), _c(run_lane), *run, r1 - r0,
                           _c(wait_lane), *wait, w1 - w0,
                           _c(batch.pass_ts), _c(batch.pass_ready), passes)

    def _lanes_of(self, owners) -> np.ndarray:
        """The lane of each owner in ``owners`` (greenlet ids, or the
        ledger's OWNER_POLL / OWNER_HUB); greenlet ids without one get new
        lanes, in the order of their ids."""
        out = np.empty(len(owners), np.int64)
        while True:
            # (lane_of changes only by a new lane, which counts _seen up,
            # or by forgetting one: its length is the rest of the key)
            key = (len(self.lane_of), self._seen)
            if self._known is None or self._known[2] != key:
                owner = np.fromiter(self.lane_of, np.int64, len(self.lane_of))
                rows = np.fromiter(self.lane_of.values(), np.int64, len(self.lane_of))
                owner = np.concatenate([owner, [OWNER_POLL, OWNER_HUB]])
                rows = np.concatenate([rows, [POLL_LANE, HUB_LANE]])
                order = np.argsort(owner)
                self._known = (_c(owner[order]), _c(rows[order]), key)
            known, rows, _ = self._known
            if not lib.lk_strip_lanes(_c(owners), len(owners), known, rows,
                                      len(self.lane_of) + 2, _c(out)):
                return out
            for gid in np.unique(owners[out < 0]).tolist():
                self._lane(gid)

    # -- reading the columns --------------------------------------------------------
    def window(self, end_ns: int | None = None) -> np.ndarray:
        """The ring slots of the ``columns`` columns ending at ``end_ns``
        (default: the newest), oldest first."""
        last = self.last_col if end_ns is None else min(self.last_col, end_ns // self.col_ns)
        return np.arange(last - self.columns + 1, last + 1) % self.size

    def busiest(self, cols: np.ndarray, count: int) -> list[int]:
        """The ``count`` greenlet lanes that ran longest in ``cols``, in order
        of first appearance."""
        busy = self.run[:len(self.gid_of), cols].sum(axis=1)
        busy[:2] = 0
        candidates = np.flatnonzero(busy > 0)
        top = candidates[np.argsort(-busy[candidates], kind="stable")[:count]]
        return sorted((int(l) for l in top), key=lambda l: self.first_seen[l])

    def hidden(self, cols: np.ndarray, shown: int) -> int:
        busy = self.run[2:len(self.gid_of), cols].sum(axis=1)
        return max(0, int((busy > 0).sum()) - shown)

    def recycle(self) -> None:
        """Free the lanes of exited greenlets that left no trace in the kept
        columns (their rows are then all zero)."""
        for lane in list(self.exited):
            if not (self.run[lane].any() or self.park[lane].any()):
                self.exited.discard(lane)
                gid = self.gid_of[lane]
                if self.lane_of.get(gid) == lane:
                    del self.lane_of[gid]
                self.gid_of[lane] = None
                self.spawn_index.pop(lane, None)
                self._free.append(lane)

    def counters(self, cols: np.ndarray) -> dict:
        """switches/s over the last second, loop utilisation and the
        longest ready queue over ``cols``."""
        last_second = cols[-max(1, int(1e9 // self.col_ns)):]
        seconds = len(last_second) * self.col_ns / 1e9
        busy = float(self.run[1:len(self.gid_of), cols].sum())
        span = len(cols) * self.col_ns
        return {"switches/s": float(self.switches[last_second].sum()) / seconds,
                "loop utilisation": min(1.0, busy / span) if span else 0.0,
                "ready queue (max)": int(self.ready[cols].max()) if len(cols) else 0}


def _span(seqs, lo: int, hi: int | None) -> tuple[int, int]:
    """The index range of the sorted ``seqs`` in [lo, hi)."""
    start = int(np.searchsorted(seqs, lo)) if lo else 0
    return start, (len(seqs) if hi is None else int(np.searchsorted(seqs, hi)))


def _rgb(color: str) -> np.ndarray:
    from matplotlib.colors import to_rgb
    return (np.array(to_rgb(color)) * 255).round().astype(np.uint8)


class Picture:
    """Draws a :class:`Strip` as a PNG; see the module docstring.

    ``size``: (width, height) in inches at ``dpi``; ``max_lanes``: greenlet
    lanes (plus poll and hub). The background (axes, ticks, legend) is drawn
    once, here."""

    def __init__(self, size=(10.0, 5.0), dpi: int = 144, max_lanes: int = 10,
                 window: float = 5.0):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
        from tracing import plot
        self.max_lanes = max_lanes
        self.slots = max_lanes + 2
        fig = Figure(figsize=size, dpi=dpi)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.set_xlim(-window, 0.0)
        ax.set_ylim(self.slots - 0.5, -0.5)
        ax.set_yticks(range(self.slots))
        # Room for the names on the left; they are written per frame.
        ax.set_yticklabels(["a greenlet's name (In[99])"] * self.slots,
                           fontsize=plot.FONT_SIZE, color="none")
        ax.tick_params(axis="x", labelsize=plot.FONT_SIZE - 1)
        ax.set_title(" ", fontsize="medium")
        plot._seconds_before(ax, 0.0)
        handles = [Patch(label=e.words, **({"facecolor": "none", "edgecolor": e.color,
                                            "hatch": e.hatch} if e.hatch else {"color": e.color}))
                   for e in legend.ENTRIES]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=2,
                  fontsize=plot.FONT_SIZE - 2, frameon=False, borderaxespad=3.4)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        canvas.draw()
        # A palette image: the PNG encoder holds the GIL, and one byte a
        # pixel encodes ~10x faster than RGB (~3 ms, not ~30). The
        # background's own colours, then the lanes' colours, then grays for
        # the names (antialiased: 8 levels).
        from PIL import Image
        rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[:, :, :3].copy())
        quantized = rgb.quantize(colors=_BG_COLORS, method=Image.Quantize.MEDIANCUT)
        palette = list(quantized.getpalette()[:3 * _BG_COLORS])
        palette += [0] * (3 * _BG_COLORS - len(palette))
        self.background = np.asarray(quantized, np.uint8).copy()
        own = {}
        for key in ("running", "idle", "late", "blocked") + KINDS[1:]:
            own[key] = len(palette) // 3
            palette += list(_rgb(legend.color(key)))
        self.gray0 = len(palette) // 3
        for level in range(8):
            palette += [level * 32] * 3
        self.palette = palette
        self.kind_index = np.array([0] + [own[k] for k in KINDS[1:]], np.uint8)
        self.run_i, self.idle_i = own["running"], own["idle"]
        self.late_i, self.block_i = own["late"], own["blocked"]
        height = self.background.shape[0]
        bbox = ax.get_window_extent()
        self.x0, self.x1 = int(round(bbox.x0)) + 1, int(round(bbox.x1)) - 1
        self.columns = self.x1 - self.x0
        # Slot i spans data y in [i - 0.5, i + 0.5]; pixel rows from the top.
        to_px = ax.transData.transform
        self._slot_y = []
        for i in range(self.slots):
            _, top = to_px((0, i - 0.5))
            _, bottom = to_px((0, i + 0.5))
            self._slot_y.append((height - top, height - bottom))   # (y of -0.5, y of +0.5)
        _, axes_top = to_px((0, -0.5))
        self.text_px = int(round(plot.FONT_SIZE * dpi / 72))
        self.title_box = (max(0, int(height - axes_top) - int(self.text_px * 1.6)),
                          max(1, int(height - axes_top) - 2))
        font_path = os.path.join(_mpl_data(), "fonts", "ttf", "DejaVuSans.ttf")
        from PIL import ImageFont
        self.font = ImageFont.truetype(font_path, self.text_px)
        self.label_width = max(1, self.x0 - int(self.text_px * 0.6))
        # Text is the dearest part of a frame after the PNG encoder (~40% of
        # it): the background with the names written in is kept for the
        # names last shown, and the note's pixels per count of hidden lanes.
        self._bands: dict = {}
        self._named = None        # (names, background with them)
        self._names: dict = {}    # name -> its pixels (see _name_pixels)
        self._notes: dict = {}    # hidden count -> (ys, xs, palette indices)

    def _band(self, slot: int, height: float) -> tuple[int, int]:
        band = self._bands.get((slot, height))
        if band is None:
            top, bottom = self._slot_y[slot]
            middle, half = (top + bottom) / 2, (bottom - top) * height / 2
            band = self._bands[slot, height] = (
                int(round(middle - half)),
                max(int(round(middle + half)), int(round(middle - half)) + 1))
        return band

    def render(self, strip: Strip, names: dict, blocks=(), end_ns: int | None = None,
               compress_level: int = 1) -> bytes:
        """PNG bytes of the window ending at ``end_ns`` (default: the newest
        column). ``names``: lane row -> name (for the lanes shown; see
        :meth:`lanes`). ``blocks``: (start_ns, end_ns) of blocks found by
        the blocking monitor."""
        from PIL import Image
        cols = strip.window(end_ns)
        cols = cols[len(cols) - self.columns:]
        last = strip.last_col if end_ns is None else min(strip.last_col, end_ns // strip.col_ns)
        col0 = last - (len(cols) - 1)   # absolute number of the first column drawn
        shown = self.lanes(strip, cols)
        texts = tuple(names.get(lane) or (POLL if lane == POLL_LANE else HUB if lane == HUB_LANE
                                          else "?") for lane in shown)
        img = self._with_names(texts).copy()
        width = len(cols)
        area = img[:, self.x0 + self.columns - width:self.x0 + self.columns]
        for slot, lane in enumerate(shown):
            run = strip.run[lane, cols] > 0
            if lane != POLL_LANE:
                park = strip.park[lane, cols]
                y0, y1 = self._band(slot, 0.4)
                waited = park > 0
                area[y0:y1, waited] = self.kind_index[park[waited]]
                late = strip.late[lane, cols]
                if late.any():
                    y0, y1 = self._band(slot, 0.56)
                    hatch = late > 0
                    area[y0:y0 + 2, hatch] = self.late_i
                    area[y1 - 2:y1, hatch] = self.late_i
                    ticks = np.flatnonzero(late == 2)
                    t0, t1 = self._band(slot, 0.68)
                    for dx in (0, 1):
                        area[t0:t1, np.minimum(ticks + dx, width - 1)] = self.late_i
            y0, y1 = self._band(slot, 0.8)
            area[y0:y1, run] = self.idle_i if lane == POLL_LANE else self.run_i
        # Blocks: on the greenlet lane that ran most during them, else the hub's.
        greenlets = [lane for lane in shown if lane >= 2]
        for start_ns, stop_ns in blocks:
            a = max(0, start_ns // strip.col_ns - col0)
            b = min(width, stop_ns // strip.col_ns - col0 + 1)
            if b <= a:
                continue
            slot = shown.index(HUB_LANE)
            if greenlets:
                busy = strip.run[greenlets][:, cols[a:b]].sum(axis=1)
                if busy.max() > 0:
                    slot = shown.index(greenlets[int(busy.argmax())])
            y0, y1 = self._band(slot, 0.9)
            area[y0:y1, a:b] = self.block_i
        # The note above the axes.
        hidden = strip.hidden(cols, len(shown) - 2)
        if hidden:
            ys, xs, values = self._note(hidden)
            img[ys, xs] = values
        image = Image.fromarray(img, mode="P")
        image.putpalette(self.palette)
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=compress_level)
        return out.getvalue()

    def _with_names(self, texts: tuple) -> np.ndarray:
        """The background with ``texts`` written right-aligned left of the
        axes, one per slot (kept for the last ``texts``: not to be changed).
        Each name's pixels are kept too (a busy server's top lanes change
        from frame to frame, among the same names)."""
        if self._named is None or self._named[0] != texts:
            img = self.background.copy()
            for slot, name in enumerate(texts):
                ys, xs, values = self._name_pixels(name)
                top, bottom = self._slot_y[slot]
                img[ys + int(round((top + bottom) / 2)), xs] = values
            self._named = (texts, img)
        return self._named[1]

    def _name_pixels(self, name: str) -> tuple:
        """(ys relative to the middle of a slot, xs, palette indices) of
        ``name`` written right-aligned left of the axes."""
        pixels = self._names.get(name)
        if pixels is None:
            from PIL import Image, ImageDraw
            if len(self._names) >= 512:
                self._names.clear()
            height = 2 * self.text_px + 4
            label = Image.new("L", (self.label_width, height), 255)
            draw = ImageDraw.Draw(label)
            draw.text((self.label_width - 1, height // 2),
                      self._fit(draw, name, self.label_width - 4), fill=0, font=self.font,
                      anchor="rm")
            levels = np.asarray(label)
            ys, xs = np.nonzero(levels < 224)
            pixels = self._names[name] = (ys - height // 2, xs,
                                          self.gray0 + (levels[ys, xs] >> 5))
        return pixels

    def _note(self, hidden: int) -> tuple:
        """The pixels of "(N quieter greenlets not shown)" above the axes."""
        pixels = self._notes.get(hidden)
        if pixels is None:
            from PIL import Image, ImageDraw
            if len(self._notes) >= 64:
                self._notes.clear()
            y0, y1 = self.title_box
            note = Image.new("L", (self.x1 - self.x0, y1 - y0), 255)
            ImageDraw.Draw(note).text(((self.x1 - self.x0) / 2, 0),
                                      f"({hidden} quieter greenlets not shown)", fill=0,
                                      font=self.font, anchor="ma")
            levels = np.asarray(note)
            ys, xs = np.nonzero(levels < 224)
            pixels = self._notes[hidden] = (ys + y0, xs + self.x0,
                                            self.gray0 + (levels[ys, xs] >> 5))
        return pixels

    def _paste(self, img, text, x: int, y: int) -> None:
        """Copy the dark pixels of ``text`` (an "L" image, black on white)
        into ``img`` at (x, y) as the palette's grays."""
        levels = np.asarray(text)
        dark = levels < 224
        region = img[y:y + levels.shape[0], x:x + levels.shape[1]]
        region[dark] = self.gray0 + (levels[dark] >> 5)

    def lanes(self, strip: Strip, cols) -> list[int]:
        """The lane rows drawn: poll, hub, then the busiest greenlets."""
        return [POLL_LANE, HUB_LANE] + strip.busiest(cols, self.max_lanes)

    def _fit(self, draw, text: str, width: int) -> str:
        if draw.textlength(text, font=self.font) <= width:
            return text
        while len(text) > 1 and draw.textlength(text + "…", font=self.font) > width:
            text = text[:-1]
        return text + "…"


def _mpl_data() -> str:
    import matplotlib
    return matplotlib.get_data_path()
