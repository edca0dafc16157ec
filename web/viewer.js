// The viewer page, served at /watch/{show}: the stream with the pinned products and the banner
// over it, reactions, and chat, the current poll and Q&A beside (desktop) or below (phone) it.
// Everything public shows from the room's feed; a name is asked for only when the viewer
// chats, votes, asks or reacts, and then a socket carries their commands (and everything else).
// What shows over the video waits for the video to get there (sync.js); chat does not. After the
// show, the page plays the recording with the room's timeline: a shoppable replay.
import {
  FeedClient, RoomClient, api, authorName, describeError, formatDuration, formatMoney, h, icon,
  reactionLabel, showFromLocation, storedToken, tokenFromFragment,
} from './client.js';
import { setBuyer, shopCard } from './shop.js';
import * as sync from './sync.js';

const show = showFromLocation();
const $ = (sel) => document.querySelector(sel);
const els = {
  title: $('[data-testid=show-title]'),
  live: $('[data-testid=live-badge]'),
  replayBadge: $('[data-testid=replay-badge]'),
  chapters: $('[data-testid=chapters]'),
  track: $('[data-testid=chapter-track]'),
  productList: $('[data-testid=product-list]'),
  conn: $('[data-testid=conn-status]'),
  viewers: $('[data-testid=viewer-count] .n'),
  video: $('[data-testid=video]'),
  offline: $('[data-testid=offline]'),
  unmute: $('[data-testid=unmute]'),
  banner: $('[data-testid=banner]'),
  bursts: $('.bursts'),
  cards: $('[data-testid=product-cards]'),
  reactions: $('[data-testid=reactions]'),
  pinned: $('[data-testid=pinned-message]'),
  messages: $('[data-testid=chat-messages]'),
  join: $('[data-testid=join-form]'),
  joinFeedback: $('[data-testid=join-feedback]'),
  composer: $('[data-testid=chat-form]'),
  input: $('[data-testid=chat-input]'),
  send: $('[data-testid=chat-send]'),
  replying: $('[data-testid=replying]'),
  feedback: $('[data-testid=chat-feedback]'),
  poll: $('[data-testid=poll]'),
  pollFeedback: $('[data-testid=poll-feedback]'),
  askForm: $('[data-testid=question-form]'),
  askInput: $('[data-testid=question-input]'),
  askFeedback: $('[data-testid=question-feedback]'),
  questions: $('[data-testid=questions]'),
  fatal: $('[data-testid=fatal]'),
};

const MAX_MESSAGES = 200;
const GUEST_KEY = `liveshop.guest.${show}`;

/** What the room looks like to us; rebuilt from every fresh welcome. */
const S = {
  me: null,
  settings: { slow_mode_secs: 0, links: 'block', emojis: [] },
  messages: new Map(),
  pinned: null,
  poll: null,
  questions: new Map(),
  pinnedQuestion: null,
  myUpvotes: new Set(),
  banner: null,
  products: [],
  viewers: 0,
};
/** The viewer's socket once they have a name (or a host's link); null while they only watch. */
let room = null;
/** The public feed, read while there is no socket. */
let feed = null;
/** Whichever of the two is running: its clock is the room's. */
let live = null;
let replyTo = null;
/** What the viewer asked to do before they had a name: done once their socket is open. */
let afterJoin = null;

for (const el of document.querySelectorAll('[data-icon]')) el.replaceWith(icon(el.dataset.icon));

// ---------- Tabs ----------

const tabs = [...document.querySelectorAll('[role=tab]')];
function selectTab(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
    if (on) t.querySelector('.dot')?.setAttribute('hidden', '');
  }
  if (tab.id === 'tab-chat') scrollChatToEnd(true);
}
for (const t of tabs) {
  t.addEventListener('click', () => selectTab(t));
  t.addEventListener('keydown', (e) => {
    const i = tabs.indexOf(t);
    const next = e.key === 'ArrowRight' ? tabs[(i + 1) % tabs.length] : e.key === 'ArrowLeft' ? tabs[(i + tabs.length - 1) % tabs.length] : null;
    if (next) {
      selectTab(next);
      next.focus();
    }
  });
}
function nudgeTab(id) {
  const t = document.getElementById(id);
  if (t.getAttribute('aria-selected') !== 'true') t.querySelector('.dot')?.removeAttribute('hidden');
}

// ---------- Video ----------
// player.js plays the stream; this only says whether it is on: offline until frames play,
// "ended" after the last one.

function showOffline(title, sub) {
  els.offline.hidden = false;
  els.live.hidden = true;
  els.unmute.hidden = true;
  els.offline.querySelector('.offline-title').textContent = title;
  els.offline.querySelector('.offline-sub').textContent = sub;
}
showOffline('The show is offline', 'It will start here when the host goes live.');
els.video.addEventListener('playing', () => {
  els.offline.hidden = true;
  els.live.hidden = !!replay;
  els.unmute.hidden = false;
});
els.video.addEventListener('ended', () => showOffline('The show has ended', 'Thanks for watching.'));
function renderUnmute() {
  const muted = els.video.muted;
  els.unmute.replaceChildren(icon(muted ? 'muted' : 'sound'), muted ? ' Tap to unmute' : ' Mute');
}
renderUnmute();
els.unmute.addEventListener('click', () => {
  els.video.muted = !els.video.muted;
  renderUnmute();
  els.video.play().catch(() => {});
});

async function loadShow() {
  try {
    const info = await api(`/v1/shows/${encodeURIComponent(show)}`);
    if (info?.title) {
      els.title.textContent = info.title;
      document.title = `${info.title} · liveshop`;
    }
  } catch (e) {
    console.warn('liveshop: show info', e);
  }
}

// ---------- Chat ----------

function nameColor(user) {
  let x = 2166136261;
  for (const c of user) x = Math.imul(x ^ c.codePointAt(0), 16777619);
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x ^= x >>> 13;
  return `hsl(${(x >>> 0) % 360} 70% 72%)`;
}

function messageEl(m, { held = false } = {}) {
  const quoted = m.reply_to != null ? S.messages.get(m.reply_to) : null;
  const mine = S.me && m.user === S.me.subject;
  return h('li', {
    testid: 'chat-message',
    class: `msg role-${m.role}${mine ? ' mine' : ''}${held ? ' held' : ''}`,
    dataset: { messageId: m.id, user: m.user },
  },
  m.reply_to != null && h('div', { class: 'quote' }, '↪ ', quoted ? `${authorName(quoted)}: ${quoted.text}` : 'an earlier message'),
  h('span', { class: 'author', style: { color: nameColor(m.user) } }, authorName(m)),
  m.role !== 'viewer' && h('span', { class: `chip chip-${m.role}` }, m.role),
  ' ',
  h('span', { class: 'text' }, m.text),
  held && h('span', { class: 'chip chip-held' }, 'awaiting review'),
  !held && h('button', {
    type: 'button', class: 'reply-btn', testid: 'reply-button', 'aria-label': `Reply to ${authorName(m)}`,
    onclick: () => startReply(m),
  }, 'Reply'));
}

function nearBottom() {
  const l = els.messages;
  return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
}
function scrollChatToEnd(force) {
  if (force || nearBottom()) els.messages.scrollTop = els.messages.scrollHeight;
}

function addMessage(m, opts) {
  const stick = nearBottom();
  const el = messageEl(m, opts);
  const old = els.messages.querySelector(`[data-message-id="${m.id}"]`);
  if (old) old.replaceWith(el);
  else els.messages.append(el);
  if (!opts?.held) S.messages.set(m.id, m);
  while (els.messages.children.length > MAX_MESSAGES) {
    const first = els.messages.firstElementChild;
    S.messages.delete(Number(first.dataset.messageId));
    first.remove();
  }
  if (stick) scrollChatToEnd(true);
}

function renderChat() {
  els.messages.replaceChildren();
  const list = [...S.messages.values()];
  S.messages.clear();
  for (const m of list) addMessage(m);
  renderPinned();
  scrollChatToEnd(true);
}

function renderPinned() {
  const m = S.pinned;
  els.pinned.hidden = !m;
  if (m) {
    els.pinned.replaceChildren(
      icon('pin'), ' ',
      h('span', { class: 'sr-only' }, 'Pinned: '),
      h('b', {}, authorName(m)), ' ', m.text,
    );
  }
}

function startReply(m) {
  replyTo = m.id;
  els.replying.hidden = false;
  els.replying.querySelector('.replying-text').textContent = `Replying to ${authorName(m)}: ${m.text}`;
  els.input.focus();
}
function cancelReply() {
  replyTo = null;
  els.replying.hidden = true;
}
els.replying.querySelector('button').addEventListener('click', cancelReply);

// Feedback under the chat input; a pace error counts down until the user may send again.
let cooldownUntil = 0;
let cooldownErr = null;
let cooldownTimer = null;
function setFeedback(text, kind = 'error') {
  els.feedback.textContent = text || '';
  els.feedback.dataset.kind = kind;
}
function startCooldown(ms, err) {
  cooldownUntil = Date.now() + ms;
  cooldownErr = err;
  clearInterval(cooldownTimer);
  const tick = () => {
    const left = cooldownUntil - Date.now();
    if (left <= 0) {
      clearInterval(cooldownTimer);
      els.send.disabled = false;
      els.send.textContent = 'Send';
      if (cooldownErr) setFeedback('');
      cooldownErr = null;
      return;
    }
    els.send.disabled = true;
    els.send.textContent = `${Math.ceil(left / 1000)} s`;
    if (cooldownErr) setFeedback(describeError(cooldownErr, left));
  };
  tick();
  cooldownTimer = setInterval(tick, 250);
}

function showChatError(err) {
  if (err.retryAfterMs && ['slow_mode', 'rate_limited', 'timed_out'].includes(err.code)) {
    startCooldown(err.retryAfterMs, err);
  } else {
    setFeedback(describeError(err));
  }
}

els.composer.addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = els.input.value.trim();
  if (!text || !room || Date.now() < cooldownUntil) return;
  const fields = { text };
  if (replyTo != null) fields.reply_to = replyTo;
  els.send.disabled = true;
  try {
    const ack = await room.send('chat.send', fields);
    els.input.value = '';
    cancelReply();
    if (ack.held) {
      setFeedback('Your message is held for review by a moderator.', 'info');
      addMessage({ id: ack.seq, user: S.me.subject, name: S.me.name, role: S.me.role, text, at: Date.now() }, { held: true });
    } else {
      setFeedback('');
    }
    els.send.disabled = false;
    if (S.settings.slow_mode_secs > 0 && S.me?.role === 'viewer') startCooldown(S.settings.slow_mode_secs * 1000, null);
  } catch (err) {
    els.send.disabled = false;
    showChatError(err);
  }
});

// ---------- Reactions ----------

const myTaps = new Map();
function renderReactionButtons() {
  els.reactions.replaceChildren(...S.settings.emojis.map((emoji) => h('button', {
    type: 'button', class: 'react', testid: 'react-button', dataset: { emoji }, 'aria-label': `React ${emoji}`,
    onclick: () => react(emoji),
  }, reactionLabel(emoji))));
}

function react(emoji) {
  if (!room) return needName('Pick a name to react', () => react(emoji));
  if (room.signal('react', { emoji })) {
    myTaps.set(emoji, (myTaps.get(emoji) || 0) + 1);
    burst(emoji, 0);
  }
}

const reduceMotion = matchMedia('(prefers-reduced-motion: reduce)').matches;
function burst(emoji, delay) {
  if (els.bursts.childElementCount > 40) return;
  const b = h('span', {
    class: 'burst',
    style: {
      right: `${4 + Math.random() * 18}%`,
      animationDelay: `${delay}ms`,
    },
  }, reactionLabel(emoji));
  b.style.setProperty('--drift', `${Math.round((Math.random() - 0.5) * 60)}px`);
  b.addEventListener('animationend', () => b.remove());
  els.bursts.append(b);
}
function onReactions(f) {
  for (const [emoji, count] of Object.entries(f.counts || {})) {
    // Our own taps already burst when we made them.
    const mine = Math.min(count, myTaps.get(emoji) || 0);
    myTaps.set(emoji, (myTaps.get(emoji) || 0) - mine);
    const n = Math.min(reduceMotion ? 1 : 8, count - mine);
    for (let i = 0; i < n; i++) burst(emoji, Math.random() * 600);
  }
}

// ---------- Poll ----------

/** Builds the poll when it changes; a new tally only updates it, so a tap is never lost. */
function renderPoll() {
  const p = S.poll;
  if (!p) {
    delete els.poll.dataset.pollId;
    els.poll.replaceChildren(h('p', { class: 'empty' }, 'No poll right now.'));
    return;
  }
  if (els.poll.dataset.pollId !== String(p.poll.id)) {
    els.poll.dataset.pollId = p.poll.id;
    els.poll.replaceChildren(
      h('p', { class: 'poll-q', id: 'poll-q' }, p.poll.question),
      h('p', { class: 'muted', testid: 'poll-status' }),
      h('ul', { class: 'options', 'aria-labelledby': 'poll-q' }, p.poll.options.map((label, i) =>
        h('li', {}, h('button', { type: 'button', class: 'option', testid: 'poll-option', dataset: { optionIndex: i }, onclick: () => vote(i) },
          h('span', { class: 'bar' }),
          h('span', { class: 'label' }, label, h('span', { class: 'chip', hidden: true }, 'your vote')),
          h('span', { class: 'pct' }))))),
    );
  }
  const total = p.total || 0;
  const max = Math.max(0, ...(p.counts || []));
  els.poll.dataset.open = String(p.open);
  els.poll.querySelector('[data-testid=poll-status]').textContent =
    `${p.open ? 'Live poll' : 'Final results'} · ${total} vote${total === 1 ? '' : 's'}`;
  els.poll.querySelectorAll('[data-testid=poll-option]').forEach((b, i) => {
    const count = p.counts?.[i] || 0;
    const pct = total ? Math.round((count * 100) / total) : 0;
    const mine = p.my_vote === i;
    b.dataset.count = count;
    b.setAttribute('aria-pressed', String(mine));
    b.disabled = !p.open;
    b.classList.toggle('mine', mine);
    b.classList.toggle('winner', !p.open && total > 0 && count === max);
    b.querySelector('.bar').style.width = `${pct}%`;
    b.querySelector('.pct').textContent = `${pct}%`;
    b.querySelector('.chip').hidden = !mine;
  });
}

async function vote(option) {
  const p = S.poll;
  if (!p?.open || replay) return;
  if (!room) return needName('Pick a name to vote', () => vote(option));
  els.pollFeedback.textContent = '';
  try {
    await room.send('poll.vote', { poll_id: p.poll.id, option });
    if (S.poll === p) {
      p.my_vote = option;
      renderPoll();
    }
  } catch (err) {
    els.pollFeedback.textContent = describeError(err);
  }
}

// ---------- Q&A ----------

function renderQuestions() {
  const list = [...S.questions.values()].sort((a, b) =>
    (b.id === S.pinnedQuestion) - (a.id === S.pinnedQuestion)
    || a.answered - b.answered
    || b.upvotes - a.upvotes
    || a.id - b.id);
  if (!list.length) {
    els.questions.replaceChildren(h('li', { class: 'empty' }, 'No questions yet. Ask the first one!'));
    return;
  }
  els.questions.replaceChildren(...list.map((q) => {
    const pinned = q.id === S.pinnedQuestion;
    const upvoted = S.myUpvotes.has(q.id);
    return h('li', {
      testid: 'question',
      class: `question${pinned ? ' pinned' : ''}${q.answered ? ' answered' : ''}`,
      dataset: { questionId: q.id },
    },
    h('button', {
      type: 'button', class: `upvote${upvoted ? ' on' : ''}`, testid: 'question-upvote',
      'aria-pressed': String(upvoted), 'aria-label': `Upvote (${q.upvotes})`, disabled: upvoted,
      onclick: () => upvote(q.id),
    }, h('span', { 'aria-hidden': 'true' }, '▲'), h('span', { class: 'n' }, String(q.upvotes))),
    h('div', { class: 'q-body' },
      h('p', { class: 'q-text' }, q.text),
      h('p', { class: 'muted' }, authorName(q),
        pinned && h('span', { class: 'chip chip-pinned' }, 'pinned'),
        q.answered && h('span', { class: 'chip chip-answered' }, 'answered'))));
  }));
}

async function upvote(id) {
  if (!room) return needName('Pick a name to upvote', () => upvote(id));
  try {
    await room.send('question.upvote', { question_id: id });
    S.myUpvotes.add(id);
  } catch (err) {
    if (err.code === 'already_upvoted') S.myUpvotes.add(id);
    else els.askFeedback.textContent = describeError(err);
  }
  renderQuestions();
}

els.askForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = els.askInput.value.trim();
  if (!text) return;
  if (!room) return needName('Pick a name to ask', () => els.askForm.requestSubmit());
  try {
    await room.send('question.ask', { text });
    els.askInput.value = '';
    els.askFeedback.textContent = 'Question sent.';
  } catch (err) {
    els.askFeedback.textContent = describeError(err);
  }
});

// ---------- Products ----------

const impressed = new Set();
const visible = new Set();
const observer = 'IntersectionObserver' in window
  ? new IntersectionObserver((entries) => {
    for (const en of entries) {
      const id = en.target.dataset.productId;
      if (en.isIntersecting) {
        visible.add(id);
        impress(id);
      } else {
        visible.delete(id);
      }
    }
  }, { threshold: 0.5 })
  : null;

/** One impression per pinned product shown (again if it is unpinned and pinned anew). */
function impress(id) {
  if (impressed.has(id) || !S.products.some((p) => p.product.id === id)) return;
  if (room?.signal('product.impression', { product_id: id })) impressed.add(id);
}

/** The room's time of what the viewer sees: the frame on screen's, when the video says. */
function roomNow() {
  return (sync.SYNC && sync.roomTimeOnScreen()) || (live ? live.now() : Date.now());
}

function countdownText(endsAt) {
  const left = endsAt - roomNow();
  return left > 0 ? `Ends in ${formatDuration(left)}` : 'Deal ended';
}

function cardEl(pin) {
  const p = pin.product;
  const body = [
    p.image_url ? h('img', { src: p.image_url, alt: '', loading: 'lazy', width: 56, height: 56 }) : h('span', { class: 'noimg' }, icon('bag')),
    h('span', { class: 'card-body' },
      h('span', { class: 'card-title' }, p.title),
      h('span', { class: 'card-meta' },
        p.price && h('span', { class: 'price', testid: 'product-price' }, formatMoney(p.price)),
        pin.sold_out && h('span', { class: 'sold-out', testid: 'sold-out' }, 'Sold out')),
      pin.countdown_ends_at && h('span', { class: 'countdown', testid: 'countdown', dataset: { endsAt: pin.countdown_ends_at } }, countdownText(pin.countdown_ends_at))),
  ];
  const click = () => room?.signal('product.click', { product_id: p.id });
  const inner = p.url
    ? h('a', { class: 'card-inner', href: p.url, target: '_blank', rel: 'noopener', onclick: click }, body)
    : h('button', { type: 'button', class: 'card-inner', onclick: click }, body);
  return h('li', {
    class: `card${pin.sold_out ? ' is-sold-out' : ''}`,
    testid: 'product-card',
    dataset: { productId: p.id, key: JSON.stringify(pin) },
  }, inner, shopCard(p.id));
}

function renderProducts() {
  const byId = new Map([...els.cards.children].map((el) => [el.dataset.productId, el]));
  const next = S.products.map((pin) => {
    const old = byId.get(pin.product.id);
    byId.delete(pin.product.id);
    if (old && old.dataset.key === JSON.stringify(pin)) return old;
    if (old) observer?.unobserve(old);
    const el = cardEl(pin);
    observer?.observe(el);
    return el;
  });
  for (const el of byId.values()) observer?.unobserve(el);
  els.cards.replaceChildren(...next);
  for (const id of [...impressed]) if (!S.products.some((p) => p.product.id === id)) impressed.delete(id);
  if (!observer) for (const pin of S.products) impress(pin.product.id);
}

setInterval(() => {
  for (const el of els.cards.querySelectorAll('[data-ends-at]')) el.textContent = countdownText(Number(el.dataset.endsAt));
}, 1000);

// ---------- Banner and presence ----------

function renderBanner() {
  els.banner.hidden = !S.banner;
  els.banner.textContent = S.banner || '';
}
function renderViewers() {
  els.viewers.textContent = new Intl.NumberFormat().format(S.viewers);
}

// ---------- The room ----------

function rebuild(state) {
  // A snapshot has everything that waited for the video.
  sync.forget();
  deletedWhileHeld.clear();
  sync.setLag(state.capture_lag_ms);
  S.settings = state.settings;
  S.messages = new Map((state.history || []).map((m) => [m.id, m]));
  S.pinned = state.pinned_message || null;
  S.poll = state.poll || null;
  S.questions = new Map((state.questions || []).map((q) => [q.id, q]));
  S.pinnedQuestion = state.pinned_question ?? null;
  S.banner = state.banner || null;
  S.products = state.products || [];
  S.viewers = state.viewers || 0;
  renderChat();
  renderReactionButtons();
  renderPoll();
  renderQuestions();
  renderProducts();
  renderBanner();
  renderViewers();
}

const handlers = {
  'welcome': (w) => {
    if (!w.resumed) rebuild(w.state);
    // The feed's welcome is nobody's: the join form stays until the viewer names themselves.
    if (!w.you) return;
    S.me = w.you;
    els.composer.hidden = false;
    els.join.hidden = true;
    for (const id of visible) impress(id);
    const todo = afterJoin;
    afterJoin = null;
    todo?.();
  },
  'chat.message': (e) => addMessage(e.message),
  'chat.deleted': (e) => {
    S.messages.delete(e.message_id);
    els.messages.querySelector(`[data-message-id="${e.message_id}"]`)?.remove();
    if (S.pinned?.id === e.message_id) {
      S.pinned = null;
      renderPinned();
    }
  },
  'chat.pinned': (e) => { S.pinned = e.message; renderPinned(); },
  'chat.unpinned': () => { S.pinned = null; renderPinned(); },
  'settings.changed': (e) => {
    const emojisChanged = JSON.stringify(e.settings.emojis) !== JSON.stringify(S.settings.emojis);
    S.settings = e.settings;
    if (emojisChanged) renderReactionButtons();
  },
  'poll.opened': (e) => {
    S.poll = { poll: e.poll, open: true, counts: e.poll.options.map(() => 0), total: 0 };
    renderPoll();
    nudgeTab('tab-poll');
  },
  'poll.voted': (e) => {
    if (S.poll?.poll.id === e.poll_id && e.user === S.me?.subject) {
      S.poll.my_vote = e.option;
      renderPoll();
    }
  },
  'poll.tally': (e) => {
    if (S.poll?.poll.id === e.poll_id && S.poll.open) {
      S.poll.counts = e.counts;
      S.poll.total = e.total;
      renderPoll();
    }
  },
  'poll.closed': (e) => {
    if (S.poll?.poll.id === e.poll_id) {
      Object.assign(S.poll, { open: false, counts: e.counts, total: e.total });
      renderPoll();
      nudgeTab('tab-poll');
    }
  },
  'question.asked': (e) => { S.questions.set(e.question.id, e.question); renderQuestions(); },
  'question.upvoted': (e) => {
    const q = S.questions.get(e.question_id);
    if (q) q.upvotes = e.upvotes;
    if (e.user === S.me?.subject) S.myUpvotes.add(e.question_id);
    renderQuestions();
  },
  'question.answered': (e) => {
    const q = S.questions.get(e.question_id);
    if (q) q.answered = true;
    renderQuestions();
  },
  'question.pinned': (e) => { S.pinnedQuestion = e.question_id; renderQuestions(); nudgeTab('tab-qa'); },
  'question.unpinned': () => { S.pinnedQuestion = null; renderQuestions(); },
  'banner.set': (e) => { S.banner = e.text; renderBanner(); },
  'banner.cleared': () => { S.banner = null; renderBanner(); },
  'product.pinned': (e) => {
    S.products = S.products.filter((p) => p.product.id !== e.pin.product.id).concat([e.pin]);
    renderProducts();
  },
  'product.unpinned': (e) => {
    S.products = S.products.filter((p) => p.product.id !== e.product_id);
    renderProducts();
  },
  'product.sold_out': (e) => {
    for (const p of S.products) if (p.product.id === e.product_id) p.sold_out = e.sold_out;
    renderProducts();
  },
  'product.countdown_ended': (e) => {
    for (const p of S.products) if (p.product.id === e.product_id) delete p.countdown_ends_at;
    renderProducts();
  },
  'reactions': onReactions,
  'presence': (f) => { S.viewers = f.viewers; renderViewers(); },
  // A player that saw the last stream end waits for nothing: start it on the new one.
  'stream.started': () => window.liveshopPlayer?.restart(),
};

// ---------- In step with the video ----------

/** Events shown over the video (or about what is): they wait for the video (sync.js). */
const ON_VIDEO = new Set([
  'product.pinned', 'product.unpinned', 'product.sold_out', 'product.countdown_ended', 'poll.opened',
  'poll.closed', 'banner.set', 'banner.cleared', 'chat.pinned', 'chat.unpinned', 'stream.started', 'stream.ended',
]);

function onVideo(f) {
  return ON_VIDEO.has(f.type) || (f.type === 'chat.message' && S.settings.sync_host_chat && f.message?.role === 'host');
}

/** Messages deleted while a frame about them waited for the video: it never shows them. */
const deletedWhileHeld = new Set();

/** Hands every frame to its handler, an on-video one once the video reaches its `media_at`. */
function follow(client) {
  for (const [type, fn] of Object.entries(handlers)) {
    client.on(type, (f) => {
      sync.learn(f);
      // A deletion acts at once (moderation does not wait), so a held host line or pin it names
      // must not show later.
      if (f.type === 'chat.deleted' && sync.waiting()) deletedWhileHeld.add(f.message_id);
      if (onVideo(f)) sync.hold(f.media_at, () => (f.message && deletedWhileHeld.has(f.message.id)) || fn(f));
      else fn(f);
    });
  }
}

// ---------- Replay ----------
// After the show, the recording plays with the room's timeline (GET /v1/rooms/{room}/timeline):
// cards, banners, polls, pinned messages and chat appear when they did live, the seek bar marks
// where each product was shown and the product list seeks there; the cards sell at the shop's
// prices now. The timeline is static once the show ended, so a CDN serves it (docs/cdn.md).

/** `{moments, applied}` while the page plays a replay; null live. */
let replay = null;

/** The ended show's timeline, or null when the show is live, has not been or cannot be read. */
async function endedTimeline() {
  try {
    const res = await fetch(`/v1/rooms/${encodeURIComponent(show)}/timeline`);
    const t = res.ok ? await res.json() : null;
    return t?.ended ? t : null;
  } catch {
    return null;
  }
}

function emptyRoom(lag) {
  return { settings: S.settings, history: [], questions: [], products: [], viewers: 0, capture_lag_ms: lag };
}

function startReplay(t) {
  // The player starts over on `stream.started`; a replay has no stream but the recording.
  const moments = t.moments.filter((m) => handlers[m.type] && !m.type.startsWith('stream.'));
  replay = { moments: moments.sort((a, b) => a.media_at - b.media_at), applied: 0, lag: t.capture_lag_ms };
  sync.replay();
  document.body.classList.add('is-replay');
  els.replayBadge.hidden = false;
  els.join.hidden = true;
  els.composer.hidden = true;
  document.getElementById('tab-qa').hidden = true;
  document.getElementById('tab-products').hidden = false;
  els.chapters.hidden = false;
  els.video.controls = true;
  rebuild(emptyRoom(replay.lag));
  renderProductList();
  sync.everyFrame(els.video, replayTo);
  els.video.addEventListener('seeked', () => replayTo(sync.videoDate()));
  for (const e of ['playing', 'durationchange']) els.video.addEventListener(e, renderChapters);
  els.track.addEventListener('click', (e) => {
    if (e.target !== els.track) return;
    const box = els.track.getBoundingClientRect();
    if (Number.isFinite(els.video.duration)) els.video.currentTime = ((e.clientX - box.left) / box.width) * els.video.duration;
  });
}

/** Shows the room as it was at media time `d`: what is new since, or everything again after a seek back. */
function replayTo(d) {
  if (d == null) return;
  const ms = replay.moments;
  if (replay.applied > 0 && ms[replay.applied - 1].media_at > d) {
    rebuild(emptyRoom(replay.lag));
    replay.applied = 0;
  }
  while (replay.applied < ms.length && ms[replay.applied].media_at <= d) {
    const m = ms[replay.applied++];
    sync.learn(m);
    // A handler keeps what it is given; the timeline's moments play again after a seek back.
    handlers[m.type](structuredClone(m));
  }
  const progress = els.track.querySelector('.chapter-progress');
  if (Number.isFinite(els.video.duration)) progress.style.width = `${(100 * els.video.currentTime) / els.video.duration}%`;
}

/** Plays the replay from media time `mediaAt`, just past it so what happened then shows. */
function seekTo(mediaAt) {
  const d = sync.videoDate();
  if (d == null) return;
  els.video.currentTime = Math.max(0, els.video.currentTime + (mediaAt - d) / 1000 + 0.05);
  els.video.play().catch(() => {});
}

/** Every time a product was pinned: `[{pin, at}]` in show order. */
function pins() {
  return replay.moments.filter((m) => m.type === 'product.pinned').map((m) => ({ pin: m.pin, at: m.media_at }));
}

/** How far into the recording media time `at` is ("2:31"), once the video says where it starts. */
function offsetText(at) {
  const start = sync.videoDate(0);
  return start == null ? '' : formatDuration(Math.max(0, at - start));
}

function renderProductList() {
  const first = new Map();
  for (const p of pins()) if (!first.has(p.pin.product.id)) first.set(p.pin.product.id, p);
  const items = [...first.values()].map(({ pin, at }) => h('li', {},
    h('button', {
      type: 'button', class: 'product-item', testid: 'product-list-item', dataset: { productId: pin.product.id, at },
      onclick: () => seekTo(at),
    },
    pin.product.image_url ? h('img', { src: pin.product.image_url, alt: '', loading: 'lazy', width: 40, height: 40 }) : h('span', { class: 'noimg' }, icon('bag')),
    h('span', {}, pin.product.title),
    h('span', { class: 'when', testid: 'product-list-time' }, offsetText(at)))));
  els.productList.replaceChildren(...(items.length ? items : [h('li', { class: 'empty' }, 'No products were shown.')]));
}

/** A mark on the seek bar at every pin, once the video's start and length are known. */
function renderChapters() {
  const start = sync.videoDate(0);
  const duration = els.video.duration;
  if (start == null || !Number.isFinite(duration) || duration <= 0) return;
  const marks = pins().map(({ pin, at }) => {
    const left = Math.min(100, Math.max(0, (100 * (at - start)) / 1000 / duration));
    const label = `${pin.product.title} at ${offsetText(at)}`;
    return h('button', {
      type: 'button', class: 'chapter', testid: 'chapter', title: label, 'aria-label': label,
      dataset: { productId: pin.product.id }, style: { left: `${left}%` }, onclick: () => seekTo(at),
    });
  });
  els.track.replaceChildren(els.track.querySelector('.chapter-progress'), ...marks);
  for (const el of els.productList.querySelectorAll('[data-testid=product-list-time]')) {
    el.textContent = offsetText(Number(el.closest('button').dataset.at));
  }
}

const STATUS_TEXT = { connecting: 'Connecting…', reconnecting: 'Reconnecting…', open: '', banned: 'Banned', failed: 'Disconnected', closed: '' };

function showStatus({ status }) {
  els.conn.dataset.state = status;
  els.conn.textContent = STATUS_TEXT[status] ?? status;
}

/** Reads the public feed: everything public, for a viewer who has not said who they are. */
function watch() {
  feed = live = new FeedClient({ show });
  follow(feed);
  feed.on('status', ({ status, detail }) => {
    showStatus({ status });
    if (status === 'failed') {
      els.fatal.hidden = false;
      els.fatal.textContent = detail?.code === 'show_not_found' ? 'There is no such show.' : 'The show cannot be reached.';
    }
  });
  feed.connect();
}

/** Opens the viewer's own socket; the feed stops (and stops counting them) as it does. */
function start(token, { guest = false } = {}) {
  feed?.close();
  feed = null;
  setBuyer(token);
  room = live = new RoomClient({ show, token });
  follow(room);
  room.on('notice', showChatError);
  room.on('status', ({ status, detail }) => {
    showStatus({ status });
    if (status === 'banned') {
      els.composer.hidden = true;
      els.fatal.hidden = false;
      els.fatal.textContent = 'You have been banned from this room.';
      els.input.disabled = true;
      for (const b of els.reactions.querySelectorAll('button')) b.disabled = true;
    }
    if (status === 'reconnecting' && guest && detail?.failedOpens >= 3) checkGuestToken();
    if (status === 'failed' && detail?.code?.startsWith('token_')) {
      if (guest) {
        stopRoom();
        askForName('Your session expired. Pick a name to join again.');
      } else {
        els.fatal.hidden = false;
        els.fatal.textContent = `This link's token was refused (${detail.code}).`;
      }
    }
  });
  room.connect();
}

/** The host answers HTTP but keeps refusing our socket: the stored guest token is no good. */
let checking = false;
async function checkGuestToken() {
  if (checking) return;
  checking = true;
  try {
    await api(`/v1/shows/${encodeURIComponent(show)}`);
    stopRoom();
    askForName('Your session ended. Pick a name to join again.');
  } catch {
    // The host is unreachable too: keep reconnecting.
  } finally {
    checking = false;
  }
}

/** A guest whose token is no good any more goes back to watching the feed. */
function stopRoom() {
  room?.close();
  room = null;
  localStorage.removeItem(GUEST_KEY);
  watch();
}

function askForName(message = '') {
  els.composer.hidden = true;
  els.join.hidden = false;
  els.joinFeedback.textContent = message;
}

/** The viewer wants to do something that needs a name: ask for it, then do it. */
function needName(why, then) {
  afterJoin = then;
  selectTab(document.getElementById('tab-chat'));
  askForName(why);
  els.join.elements.name.focus();
}

els.join.addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = els.join.elements.name.value.trim();
  if (!name) return;
  els.joinFeedback.textContent = '';
  const button = els.join.querySelector('button');
  button.disabled = true;
  try {
    const res = await api(`/v1/rooms/${encodeURIComponent(show)}/guest`, { method: 'POST', body: { name } });
    localStorage.setItem(GUEST_KEY, JSON.stringify({ token: res.token, subject: res.subject, name }));
    els.join.hidden = true;
    start(res.token, { guest: true });
  } catch (err) {
    els.joinFeedback.textContent = err.message;
  } finally {
    button.disabled = false;
  }
});

loadShow();
renderPoll();
renderQuestions();
const ended = await endedTimeline();
const fragmentToken = tokenFromFragment();
const guest = fragmentToken ? null : storedToken(GUEST_KEY);
if (ended) {
  startReplay(ended);
  if (guest) setBuyer(guest.token);
} else if (fragmentToken) start(fragmentToken);
else if (guest) start(guest.token, { guest: true });
else {
  askForName();
  watch();
}
