// The show's stream in the viewer page's <video>: Low-Latency HLS from the media origin at
// /hls/{show}/master.m3u8. hls.js (from npm, served by the node at /media/hls.js, never a
// committed copy) plays it where MediaSource exists; where it is missing (iOS Safari before
// ManagedMediaSource) the browser plays the playlist natively if it says it can, and otherwise
// the page says it cannot play the stream, without loading hls.js for nothing. hls.js chooses
// between the AAC and Opus variants by what MediaSource decodes; the browser's own HLS gets the
// AAC variant alone (master-aac.m3u8): every native player decodes AAC, and some (Chromium's)
// fail when they switch between variants of different audio codecs.
// While the show is offline the player looks again every few seconds; after the end, the same
// playlist is the recording and plays from the start. `date()` says which moment of the show is
// on screen, for overlays that wait for the video (viewer.js, docs/sync.md).
(function () {
  'use strict';
  const video = document.querySelector('[data-testid=video]');
  const path = location.pathname.match(/^\/watch\/([^/]+)/);
  if (!video || !path) return;
  const url = `/hls/${path[1]}/master.m3u8`;
  const mode = (window.ManagedMediaSource || window.MediaSource) ? 'hls.js'
    : video.canPlayType('application/vnd.apple.mpegurl') ? 'native' : 'none';
  let hls = null;
  let timer = null;

  let loading = null;
  function loadHlsJs() {
    loading ??= new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = '/media/hls.js';
      s.onload = () => resolve(window.Hls);
      s.onerror = () => reject(new Error('hls.js did not load (npm ci in web/)'));
      document.head.append(s);
    });
    return loading;
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(start, 3000);
  }

  function cannotPlay() {
    document.querySelector('[data-testid=cannot-play]')?.removeAttribute('hidden');
  }

  async function start() {
    const live = await fetch(url, { cache: 'no-store' }).then((r) => r.ok, () => false);
    if (!live) return later();
    if (mode === 'hls.js') {
      const Hls = await loadHlsJs().catch((e) => console.warn('liveshop player:', e));
      if (!Hls) return;
      if (!Hls.isSupported()) return cannotPlay();
      hls?.destroy();
      hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal) return;
        hls.destroy();
        hls = null;
        later();
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    } else {
      video.src = url.replace(/master\.m3u8$/, 'master-aac.m3u8');
    }
    video.play().catch(() => {});
  }

  // The browser's own player reports a failed load on the element: look again shortly.
  if (mode === 'native') video.addEventListener('error', later);

  // A live stream that stalls jumps to where hls.js would start now, instead of waiting
  // forever: a safety net. The one stall found (hls.js 1.7.4 reads a part of media sequence 0
  // as "no part", `appendedPart?.fragment.sn || -1`, and reloads it in a loop) the origin
  // avoids by numbering segments from 1. Replays are left alone: they have no live position.
  let lastTime = -1;
  let stuckSince = 0;
  setInterval(() => {
    if (!hls || video.paused || video.currentTime !== lastTime) {
      lastTime = video.currentTime;
      stuckSince = performance.now();
      return;
    }
    const edge = hls.liveSyncPosition;
    if (performance.now() - stuckSince > 2500 && edge != null && edge > video.currentTime) {
      video.currentTime = edge;
      stuckSince = performance.now();
    }
  }, 500);

  /**
   * The program date time (ms since the Unix epoch, the publisher's capture clock) of the frame at
   * `mediaTime` (the playing one by default), or null while nothing plays. hls.js maps it from the
   * playing fragment's EXT-X-PROGRAM-DATE-TIME; the browser's own HLS from getStartDate().
   */
  function date(mediaTime = video.currentTime) {
    if (video.readyState < 2) return null;
    let at = null;
    if (hls) {
      const d = hls.playingDate;
      if (d) at = d.getTime() + (mediaTime - video.currentTime) * 1000;
    } else if (typeof video.getStartDate === 'function') {
      const start = video.getStartDate().getTime();
      if (Number.isFinite(start) && start > 0) at = start + mediaTime * 1000;
    } else if (anchor != null) {
      at = anchor + mediaTime * 1000;
    }
    return at;
  }

  // The browser's own HLS without getStartDate() (Chromium's) plays on the playlist's timeline:
  // a segment starts where the EXTINF durations of those before it end (measured: a stream whose
  // first segment's decode time is not 0 still starts at 0). So the date at media time 0 is the
  // newest segment's EXT-X-PROGRAM-DATE-TIME minus the durations before it.
  let anchor = null;
  async function findAnchor() {
    if (hls || typeof video.getStartDate === 'function') return;
    const playlist = new URL(url.replace(/master\.m3u8$/, 'aac-live.m3u8'), location.href);
    const text = await fetch(playlist).then((r) => r.text());
    let before = 0;
    let newest = null;
    for (const line of text.split('\n')) {
      // Every segment of ours has its own date.
      if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) newest = { pdt: Date.parse(line.slice(25)), before };
      else if (line.startsWith('#EXTINF:')) before += Number.parseFloat(line.slice(8));
    }
    if (newest && Number.isFinite(newest.pdt)) anchor = newest.pdt - newest.before * 1000;
  }
  if (mode === 'native') {
    const anchorNow = () => findAnchor().catch((e) => console.warn('liveshop player:', e));
    video.addEventListener('playing', anchorNow);
    // And again every 30 s, should the publisher's clock drift from the media's.
    setInterval(() => video.paused || anchorNow(), 30_000);
  }

  // For the page and for tests: how it plays ('hls.js', 'native' or 'none'), the hls.js
  // instance (playingDate, latency), the playing frame's date and a way to start over, such as
  // when the room says the stream started again.
  window.liveshopPlayer = { mode, date, get hls() { return hls; }, restart: mode === 'none' ? () => {} : start };
  if (mode === 'none') cannotPlay(); else start();
})();
