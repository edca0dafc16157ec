// The show's stream in the viewer page's <video>: Low-Latency HLS from the media origin at
// /hls/{show}/master.m3u8. hls.js (from npm, served by the node at /media/hls.js, never a
// committed copy) plays it where MediaSource exists; Safari and iOS without it play it natively.
// While the show is offline the player looks again every few seconds; after the end, the same
// playlist is the recording and plays from the start.
(function () {
  'use strict';
  const video = document.querySelector('[data-testid=video]');
  const path = location.pathname.match(/^\/watch\/([^/]+)/);
  if (!video || !path) return;
  const url = `/hls/${path[1]}/master.m3u8`;
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

  async function start() {
    const live = await fetch(url, { cache: 'no-store' }).then((r) => r.ok, () => false);
    if (!live) return later();
    const mse = window.ManagedMediaSource || window.MediaSource;
    if (mse) {
      const Hls = await loadHlsJs().catch((e) => console.warn('liveshop player:', e));
      if (!Hls || !Hls.isSupported()) return;
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
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = url;
    } else {
      return;
    }
    video.play().catch(() => {});
  }

  // A live stream that stalls (a gap in the buffer, seen when a player joins in the first
  // seconds of a stream on a loaded machine) jumps to where hls.js would start now, instead of
  // waiting forever. Replays are left alone: they have no live position.
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

  // For the page and for tests: the hls.js instance (playingDate, latency) and a way to start
  // over, such as when the room says the stream started again.
  window.liveshopPlayer = { get hls() { return hls; }, restart: start };
  start();
})();
