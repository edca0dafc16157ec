// Overlays in step with the video (docs/sync.md). A viewer sees the host a second or more late,
// but a pin reaches the page in milliseconds: what shows over the video (pins, countdowns, polls,
// banners, pinned messages, the shop's deals) waits here until the playing frame's program date
// time (player.js `date()`) reaches the media time it belongs to. The room stamps its events with
// `media_at`; the shop's frames carry the shop's clock, mapped by the room's lag
// (`at - media_at`). Chat and checkout never wait.
//
// `?sync=0` on the page shows everything as it arrives (for comparing).

export const SYNC = new URLSearchParams(location.search).get('sync') !== '0';
/** The longest anything waits: a stalled player or a clock far off never hides a pin for long. */
const MAX_HOLD_MS = 15_000;

/** Room time minus media time, from the newest room frame that had both. */
let lag = null;
/** The page plays a recording: only the room's past waits for the video, not the shop's now. */
let replayingNow = false;
/** What waits, in the order it happened: the room's frames, and apart the shop's (each has its
 * own snapshots, which drop only their own). */
const room = [];
const shop = [];

/** The program date time of the frame at `mediaTime` (the playing one by default), or null. */
export function videoDate(mediaTime) {
  return window.liveshopPlayer?.date(mediaTime) ?? null;
}

/** Learns the room's lag from a frame that has `at` and `media_at`. */
export function learn(frame) {
  if (typeof frame.media_at === 'number' && typeof frame.at === 'number') lag = frame.at - frame.media_at;
}

/** The page plays a replay (viewer.js). */
export function replay() {
  replayingNow = true;
}

/** Whether the page plays a replay. */
export function replaying() {
  return replayingNow;
}

/**
 * Runs `fn` for a shop frame (the shop's clock `now`) once the video reaches it: a deal starts
 * and ends as the host says so on screen. A replay sells at the prices now, at once.
 */
export function holdShop(now, fn) {
  if (replayingNow) return fn();
  wait(shop, mediaTime(now), fn);
}

/** The shop's clock for a deal countdown: the frame on screen's while live, else `fallback`. */
export function shopNow(fallback) {
  return (!replayingNow && SYNC && roomTimeOnScreen()) || fallback;
}

/** Sets the lag a snapshot says (`capture_lag_ms`), or forgets it. */
export function setLag(ms) {
  lag = typeof ms === 'number' ? ms : null;
}

/** The room's time of the frame on screen, or null while the video says nothing. */
export function roomTimeOnScreen() {
  const d = videoDate();
  return d != null && lag != null ? d + lag : null;
}

/** The media time of room time `at`, or null before the room has a video clock. */
export function mediaTime(at) {
  return lag != null ? at - lag : null;
}

/**
 * Runs the room's `fn` once the video reaches `mediaAt` (at once without sync, a media time, or a
 * playing video). What is already waiting goes first: things show in the order they happened.
 */
export function hold(mediaAt, fn) {
  wait(room, mediaAt, fn);
}

function wait(queue, mediaAt, fn) {
  const d = videoDate();
  if (!SYNC || mediaAt == null || (!queue.length && (d == null || d >= mediaAt))) return fn();
  queue.push({ mediaAt, fn, since: performance.now() });
}

/** Whether room frames wait for the video. */
export function waiting() {
  return room.length > 0;
}

/** Drops the room frames that wait: a fresh room snapshot already has them. */
export function forget() {
  room.length = 0;
}

/** Drops the shop frames that wait: a fresh shop snapshot already has them. */
export function forgetShop() {
  shop.length = 0;
}

function release(d) {
  for (const queue of [room, shop]) {
    while (queue.length) {
      const { mediaAt, fn, since } = queue[0];
      if (d != null && d < mediaAt && performance.now() - since < MAX_HOLD_MS) break;
      queue.shift();
      fn();
    }
  }
}

/**
 * Calls `onFrame(date)` for every frame the video presents (requestVideoFrameCallback, with the
 * frame's own media time), and every 250 ms besides, so nothing waits on a video that stopped.
 */
export function everyFrame(video, onFrame) {
  if ('requestVideoFrameCallback' in video) {
    const tick = (_now, meta) => {
      onFrame(videoDate(meta.mediaTime));
      video.requestVideoFrameCallback(tick);
    };
    video.requestVideoFrameCallback(tick);
  }
  setInterval(() => onFrame(videoDate()), 250);
}

const video = document.querySelector('[data-testid=video]');
if (video) everyFrame(video, release);
