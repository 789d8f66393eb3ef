// The remotetask management page: fills itself from the JSON API (see
// /api/openapi.json) and polls it every second.  No framework, no build.
'use strict';

const STATUSES = ['start later', 'deferred', 'queued', 'delayed', 'cronjob', 'processing',
                  'completed', 'error', 'cancelled'];
const state = {
  me: null, csrf: '', status: '', task: '', sort: '-id', limit: 50,
  queue: '', priority: '',   // filters of routing.js
  cursors: [null],   // cursor of each page visited; the last is the current
  next: null, selected: null, cronEditFor: null, busy: false, again: false,
};
const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined)
      node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// -- talking to the API -------------------------------------------------------

async function api(method, path, body) {
  const headers = {'X-Requested-With': 'remotetask', 'Accept': 'application/json'};
  const options = {method, headers, credentials: 'same-origin'};
  if (method !== 'GET') headers['X-CSRF-Token'] = state.csrf;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) { window.location.href = 'login'; throw new Error('not logged in'); }
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) throw new Error((data && data.error) || response.statusText);
  return data;
}

function toast(message, isError) {
  const box = $('#toast');
  box.textContent = message;
  box.className = 'toast' + (isError ? ' toast-error' : '');
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, isError ? 6000 : 2500);
}

async function act(label, method, path, body) {
  try {
    const result = await api(method, path, body);
    toast(label);
    await refresh();
    return result;
  } catch (e) {
    toast(e.message, true);
    return null;
  }
}

// A bulk action or clean is one bounded step per request (one transaction
// on the server): repeat it with the answer's cursor until "more" is
// false, adding up the field "counted" (count or removed) and calling
// progress(total) after each step.  Each answer's cursor is past the jobs
// it looked at, so the loop ends.
async function steps(path, body, counted, progress) {
  let total = 0;
  let cursor = null;
  for (;;) {
    const result = await api('POST', path, Object.assign({}, body, cursor ? {cursor} : {}));
    total += result[counted];
    if (progress) progress(total, result.more);
    if (!result.more) return total;
    cursor = result.cursor;
  }
}

// -- formatting -----------------------------------------------------------------

// Any value a job may hold: a time out of Date's range (about 275,760
// years), a string the API made of NaN or inf, shows as it is.
function when(t) {
  if (t === null || t === undefined) return '';
  const d = new Date(t * 1000);
  if (typeof t !== 'number' || isNaN(d.getTime())) return String(t);
  const today = new Date();
  const time = d.toLocaleTimeString([], {hour12: false});
  if (d.toDateString() === today.toDateString()) return time;
  return d.toISOString().slice(0, 10) + ' ' + time;
}

// A time is given unless null (0 is 1970-01-01, a time like any other).
function given(t) { return t !== null && t !== undefined; }

function relative(t) {
  if (t === null || t === undefined) return '';
  if (typeof t !== 'number' || !isFinite(t)) return String(t);
  const s = Math.round(t - Date.now() / 1000);
  const abs = Math.abs(s);
  const text = abs < 60 ? abs + 's' : abs < 3600 ? Math.round(abs / 60) + 'm'
    : abs < 86400 ? Math.round(abs / 3600) + 'h' : Math.round(abs / 86400) + 'd';
  return s >= 0 ? 'in ' + text : text + ' ago';
}

function pretty(value) {
  if (value === null || value === undefined) return '—';
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

function badge(status) {
  return el('span', {class: 'status status-' + status.replace(' ', '-'), text: status});
}

function progressBar(job) {
  const [fraction, message] = job.progress || [null, ''];
  if (job.status !== 'processing' && fraction === null) return '';
  const bar = el('div', {class: 'progress' + (fraction === null ? ' indeterminate' : ''),
                         title: message || '', role: 'progressbar'});
  const fill = el('div', {class: 'progress-fill'});
  if (fraction !== null) {
    fill.style.width = Math.round(fraction * 100) + '%';
    bar.setAttribute('aria-valuenow', Math.round(fraction * 100));
  }
  bar.append(fill);
  const label = fraction === null ? (message || 'running')
    : Math.round(fraction * 100) + '%' + (message ? ' · ' + message : '');
  return el('div', {class: 'progress-cell'}, bar, el('span', {class: 'muted small', text: label}));
}

function scheduleText(s) {
  if (!s) return '';
  if (s.expression) return s.expression + (s.timezone ? ' (' + s.timezone + ')' : ' (UTC)');
  const parts = [];
  for (const name of ['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'])
    if (s[name] && s[name].length) parts.push(name + '=' + s[name].join(','));
  if (s.interval) parts.push('every ' + s.interval + 's');
  if (s.delay) parts.push('once, ' + s.delay + 's after scheduling');
  return parts.join(' ') || 'every minute';
}

// -- actions per job ----------------------------------------------------------------

function jobActions(job) {
  if (!isManager()) return [];
  const buttons = [];
  const add = (label, handler, cls) => buttons.push(
    el('button', {class: 'small ' + (cls || ''), 'data-action': label.toLowerCase(),
                  onclick: (e) => { e.stopPropagation(); handler(); }}, label));
  const path = 'api/jobs/' + job.id;
  if (['deferred', 'queued', 'delayed', 'cronjob', 'start later'].includes(job.status))
    add('Cancel', () => act('Job ' + job.id + ' cancelled', 'POST', path + '/cancel'));
  if (job.status === 'start later')
    add('Start', () => act('Job ' + job.id + ' started', 'POST', path + '/start'));
  if (['error', 'cancelled'].includes(job.status))
    add('Retry', () => act('Job ' + job.id + ' queued again', 'POST', path + '/retry'));
  if (job.cron && ['cronjob', 'delayed', 'cancelled', 'error', 'completed'].includes(job.status))
    add('Reschedule', () => act('Job ' + job.id + ' rescheduled', 'POST', path + '/reschedule'));
  if (job.status !== 'processing')
    add('Delete', () => {
      if (confirm('Delete job ' + job.id + '?'))
        act('Job ' + job.id + ' deleted', 'DELETE', path).then(() => {
          if (state.selected === job.id) closeDetail();
        });
    }, 'danger');
  return buttons;
}

function isManager() { return state.me && state.me.role === 'manager'; }

// -- rendering ------------------------------------------------------------------------

function renderCounts(data) {
  const box = $('#counts');
  box.replaceChildren(
    el('button', {class: 'count' + (state.status === '' ? ' active' : ''), 'data-status': '',
                  onclick: () => setFilter('')},
       el('span', {class: 'count-n', text: data.total}), el('span', {class: 'count-label', text: 'all'})),
    ...STATUSES.map((s) => el('button', {
      class: 'count count-' + s.replace(' ', '-') + (state.status === s ? ' active' : ''),
      'data-status': s, onclick: () => setFilter(s)},
      el('span', {class: 'count-n', text: data.counts[s]}), el('span', {class: 'count-label', text: s}))));
  const p = data.processing;
  const pill = $('#processing-state');
  pill.textContent = !p.available ? 'no processor' : p.running ? 'processing' : 'stopped';
  pill.className = 'pill ' + (p.running ? 'pill-on' : 'pill-off');
  const toggle = $('#processing-toggle');
  toggle.hidden = !p.available || !isManager();
  toggle.textContent = p.running ? 'Stop processing' : 'Start processing';
  toggle.dataset.running = p.running ? '1' : '';
}

function renderJobs(page) {
  const body = $('#jobs tbody');
  body.replaceChildren(...page.jobs.map((job) => el('tr', {
    'data-id': job.id, class: state.selected === job.id ? 'selected' : '',
    onclick: () => selectJob(job.id)},
    el('td', {class: 'num'}, jobLink(job.id, String(job.id))), el('td', {}, job.task, ...routingTags(job)),
    el('td', {}, badge(job.status), job.cron ? el('span', {class: 'tag', text: 'cron'}) : ''),
    el('td', {text: when(job.created)}),
    el('td', {title: when(given(job.eta) ? job.eta : job.started)},
       given(job.eta) ? relative(job.eta) : when(job.started)),
    el('td', {}, progressBar(job)),
    el('td', {class: 'actions'}, ...jobActions(job)))));
  if (!page.jobs.length)
    body.append(el('tr', {}, el('td', {colspan: 7, class: 'empty', text:
      page.next ? 'No match among the jobs looked at; go on with Next.' : 'No jobs.'})));
  state.next = page.next;
  const n = state.cursors.length;
  const first = (n - 1) * state.limit + 1;
  const shown = page.jobs.length ? first + '–' + (first + page.jobs.length - 1) : '0';
  $('#page-info').textContent = 'page ' + n + ' · ' + shown +
    (page.total !== null ? ' of ' + page.total : '');
  $('#page-prev').disabled = $('#page-first').disabled = n <= 1;
  $('#page-next').disabled = page.next === null;
  $('#sort-id').textContent = 'ID' + (state.sort === '-id' ? ' ▼' : state.sort === 'id' ? ' ▲' : '');
}

function renderWorkers(data) {
  $('#worker-warnings').replaceChildren(...data.warnings.map((w) => el('li', {class: 'error', text: w})));
  const body = $('#workers tbody');
  body.replaceChildren(...data.workers.map((w) => el('tr', {'data-worker': w.id},
    el('td', {text: w.id, title: w.host + ' pid ' + w.pid + ' (remotetask ' + w.version + ')'}),
    el('td', {text: w.kind}), el('td', {text: w.tasks.join(', ')}),
    el('td', {class: 'num', text: w.concurrency}),
    el('td', {text: w.running.length ? w.running.join(', ') : '-'}),
    el('td', {class: 'num', text: w.done}), el('td', {class: 'num', text: w.failed}),
    el('td', {title: when(w.started)}, relative(w.started)),
    el('td', {title: when(w.heartbeat)}, relative(w.heartbeat)))));
  if (!data.workers.length)
    body.append(el('tr', {}, el('td', {colspan: 9, class: 'empty', text: 'No live workers: jobs wait until one runs (remotetask worker, or Start processing).'})));
}

function renderCron(page) {
  const body = $('#cronjobs tbody');
  body.replaceChildren(...page.jobs.map((job) => el('tr', {
    'data-id': job.id, onclick: () => selectJob(job.id)},
    el('td', {class: 'num', text: job.id}), el('td', {text: job.task}),
    el('td', {text: scheduleText(job.schedule)}),
    el('td', {title: when(job.eta)}, relative(job.eta)),
    el('td', {class: 'error', text: job.error || ''}),
    el('td', {class: 'actions'}, ...jobActions(job)))));
  if (!page.jobs.length)
    body.append(el('tr', {}, el('td', {colspan: 6, class: 'empty', text: 'No cron jobs waiting.'})));
}

function renderDetail(job) {
  $('#detail').hidden = false;
  $('#detail-title').replaceChildren('Job ' + job.id + ' ', badge(job.status));
  $('#detail-actions').replaceChildren(...jobActions(job));
  const fields = [['Task', job.task], ['Queue', job.queue], ['Priority', job.priority],
    ['Unique key', job.unique_key], ['Created', when(job.created)],
    ['Due', given(job.eta) ? when(job.eta) + ' (' + relative(job.eta) + ')' : ''],
    ['Started', when(job.started)], ['Ended', when(job.completed)],
    ['Worker', job.worker], ['Starts', job.starts], ['Retries', job.retries],
    ['Lease until', when(job.lease_expires)], ['Time limit', job.time_limit],
    ['Schedule', job.cron ? scheduleText(job.schedule) : '']];
  $('#detail-fields').replaceChildren(...fields.filter(([, v]) => v !== '' && v !== null && v !== undefined)
    .flatMap(([k, v]) => [el('dt', {text: k}), el('dd', {text: v})]));
  renderWorkflow(job);
  $('#detail-progress').replaceChildren(progressBar(job) || '');
  $('#detail-input').textContent = pretty(job.input);
  $('#detail-result').textContent = pretty(job.result);
  $('#detail-error-box').hidden = !job.error;
  $('#detail-error').textContent = job.error || '';
  $('#detail-traceback-box').hidden = !job.traceback;
  $('#detail-traceback').textContent = job.traceback || '';
  // An attempt's error under its outcome, wrapped (long errors stay inside).
  $('#detail-attempts tbody').replaceChildren(...job.attempts.map((a, i) => el('tr', {},
    el('td', {text: i + 1}), el('td', {text: when(a.start)}), el('td', {text: when(a.end)}),
    el('td', {class: 'wrap', text: a.worker || ''}),
    el('td', {}, a.outcome || 'running',
       a.error ? el('div', {class: 'error wrap attempt-error', text: a.error}) : ''))));
  const form = $('#cron-edit');
  form.hidden = !job.cron || !isManager();
  if (job.cron && state.cronEditFor !== job.id) {
    state.cronEditFor = job.id;
    fillSchedule(form, job.schedule);
  }
}

// A job's parents (the jobs it was added after) and children, as links; what
// a deferred job still waits for.
function renderWorkflow(job) {
  const box = $('#detail-workflow');
  const links = (ids, total) => {
    const items = [];
    (ids || []).forEach((id, i) => {
      if (i) items.push(', ');
      items.push(el('a', {href: '#/jobs/' + id, class: 'job-link', 'data-job': id,
                          onclick: (e) => { e.preventDefault(); selectJob(id); }}, '#' + id));
    });
    if (total > (ids || []).length) items.push(' and ' + (total - ids.length) + ' more');
    return items;
  };
  const rows = [];
  if (job.status === 'deferred' && job.waiting_for !== null && job.waiting_for !== undefined) {
    const more = job.waiting_for - (job.waiting_on || []).length;
    rows.push(el('p', {class: 'waiting'}, 'Waiting for ' + job.waiting_for + ' of ' +
                 job.parents_total + ' parent job' + (job.parents_total === 1 ? '' : 's') + ': ',
                 ...links(job.waiting_on, job.waiting_on.length),
                 more > 0 ? ' and ' + more + ' more' : ''));
  }
  if (job.parents_total)
    rows.push(el('p', {class: 'parents'}, 'Runs after: ', ...links(job.parents, job.parents_total)));
  if (job.children_total)
    rows.push(el('p', {class: 'children'}, 'Jobs waiting for it: ',
                 ...links(job.children, job.children_total)));
  box.replaceChildren(...rows);
  box.hidden = !rows.length;
}

// -- schedule forms ---------------------------------------------------------------

function scheduleFields(form) {
  const box = $('.schedule-fields', form);
  box.replaceChildren(
    el('label', {}, 'Schedule ', el('select', {name: 'mode', onchange: () => showMode(form)},
      el('option', {value: 'interval'}, 'every N seconds'),
      el('option', {value: 'delay'}, 'once, N seconds later'),
      el('option', {value: 'expression'}, 'cron expression'),
      el('option', {value: 'fields'}, 'fields (UTC)'))),
    el('label', {class: 'mode-interval'}, 'Every (s) ', el('input', {name: 'interval', type: 'number', min: '1', step: 'any', value: '60'})),
    el('label', {class: 'mode-delay'}, 'After (s) ', el('input', {name: 'delay', type: 'number', min: '1', step: 'any', value: '60'})),
    el('div', {class: 'mode-expression row'},
      el('label', {}, 'Expression ', el('input', {name: 'expression', placeholder: '*/5 * * * *'})),
      el('label', {}, 'Time zone ', el('input', {name: 'timezone', placeholder: 'UTC'}))),
    el('div', {class: 'mode-fields row'},
      ...['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'].map((name) =>
        el('label', {}, name + ' ', el('input', {name, placeholder: 'any', size: 6})))));
  showMode(form);
}

function showMode(form) {
  const mode = $('[name=mode]', form).value;
  for (const m of ['interval', 'delay', 'expression', 'fields'])
    $$('.mode-' + m, form).forEach((node) => { node.hidden = m !== mode; });
}

function fillSchedule(form, s) {
  const fields = ['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'].some((n) => s[n] && s[n].length);
  const mode = s.expression ? 'expression' : fields ? 'fields' : s.interval ? 'interval' : s.delay ? 'delay' : 'fields';
  $('[name=mode]', form).value = mode;
  $('[name=interval]', form).value = s.interval || '';
  $('[name=delay]', form).value = s.delay || '';
  $('[name=expression]', form).value = s.expression || '';
  $('[name=timezone]', form).value = s.timezone || '';
  for (const n of ['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'])
    $('[name=' + n + ']', form).value = (s[n] || []).join(',');
  showMode(form);
}

function readSchedule(form) {
  const mode = $('[name=mode]', form).value;
  const s = {};
  if (mode === 'interval') s.interval = Number($('[name=interval]', form).value);
  else if (mode === 'delay') s.delay = Number($('[name=delay]', form).value);
  else if (mode === 'expression') {
    s.expression = $('[name=expression]', form).value.trim();
    const tz = $('[name=timezone]', form).value.trim();
    if (tz) s.timezone = tz;
  } else {
    for (const n of ['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek']) {
      const text = $('[name=' + n + ']', form).value.trim();
      if (!text) continue;
      s[n] = text.split(',').map((v) => {
        const number = Number(v.trim());
        if (!Number.isInteger(number)) throw new Error(n + ': not a list of integers: ' + text);
        return number;
      });
    }
  }
  return s;
}

function readInput(form) {
  const text = $('[name=input]', form).value.trim();
  if (!text) return null;
  try { return JSON.parse(text); } catch (e) { throw new Error('Input is not JSON: ' + e.message); }
}

// -- refreshing -----------------------------------------------------------------------

function jobsQuery() {
  const q = new URLSearchParams({sort: state.sort, limit: state.limit});
  if (state.status) q.set('status', state.status);
  if (state.task) q.set('task', state.task);
  if (state.queue) q.set('queue', state.queue);
  if (state.priority !== '') q.set('priority', state.priority);
  const cursor = state.cursors[state.cursors.length - 1];
  if (cursor !== null) q.set('cursor', cursor);
  return 'api/jobs?' + q;
}

async function refresh() {
  // A change made while a refresh is under way (a new sort, page size or
  // filter) is not dropped: the running refresh starts one more when done.
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  state.again = false;
  try {
    const [counts, page, cron, workers] = await Promise.all([
      api('GET', 'api/counts'), api('GET', jobsQuery()),
      api('GET', 'api/jobs?status=cronjob&sort=id&limit=50'), api('GET', 'api/workers')]);
    renderCounts(counts);
    renderJobs(page);
    renderCron(cron);
    renderWorkers(workers);
    if (state.selected !== null) {
      try { renderDetail(await api('GET', 'api/jobs/' + state.selected)); }
      catch (e) { closeDetail(); }
    }
    $('#live').classList.remove('stale');
  } catch (e) {
    $('#live').classList.add('stale');
  } finally {
    state.busy = false;
    if (state.again) refresh();
  }
}

function setFilter(status) {
  state.status = status;
  $('#filter-status').value = status;
  state.cursors = [null];
  refresh();
}

async function selectJob(id) {
  if (state.selected !== id) state.cronEditFor = null;  // keep edits in progress
  state.selected = id;
  linkJob(id);   // the job's URL (stats.js)
  try { renderDetail(await api('GET', 'api/jobs/' + id)); } catch (e) { toast(e.message, true); }
  $$('#jobs tbody tr').forEach((tr) => tr.classList.toggle('selected', Number(tr.dataset.id) === id));
}

function closeDetail() {
  state.selected = null;
  state.cronEditFor = null;
  $('#detail').hidden = true;
  unlinkJob();   // stats.js
}

// -- wiring ---------------------------------------------------------------------------

function wire() {
  const statusSelect = $('#filter-status');
  STATUSES.forEach((s) => statusSelect.append(el('option', {value: s, text: s})));
  statusSelect.addEventListener('change', () => setFilter(statusSelect.value));
  $('#filter-task').addEventListener('change', (e) => { state.task = e.target.value; state.cursors = [null]; refresh(); });
  $('#sort').addEventListener('change', (e) => { state.sort = e.target.value; state.cursors = [null]; refresh(); });
  $('#sort-id').addEventListener('click', () => {
    state.sort = state.sort === '-id' ? 'id' : '-id';
    $('#sort').value = state.sort; state.cursors = [null]; refresh();
  });
  $('#limit').addEventListener('change', (e) => { state.limit = Number(e.target.value); state.cursors = [null]; refresh(); });
  $('#page-first').addEventListener('click', () => { state.cursors = [null]; refresh(); });
  $('#page-prev').addEventListener('click', () => { if (state.cursors.length > 1) state.cursors.pop(); refresh(); });
  $('#page-next').addEventListener('click', () => { if (state.next !== null) state.cursors.push(state.next); refresh(); });
  $('#detail-close').addEventListener('click', closeDetail);
  $('#processing-toggle').addEventListener('click', (e) => {
    const running = !e.target.dataset.running;
    act(running ? 'Processing started' : 'Processing stopping', 'POST', 'api/processing', {running});
  });
  $('#add-job').addEventListener('submit', (e) => {
    e.preventDefault();
    const form = e.target;
    let data;
    try {
      data = {task: form.task.value, input: readInput(form), startLater: form.startLater.checked};
      if (form.delay.value !== '') data.delay = Number(form.delay.value);
      Object.assign(data, routingFields(form, true));
      const after = form.after.value.trim();
      if (after) {
        data.after = after.split(/[\s,]+/).filter((v) => v).map((v) => {
          const id = Number(v.replace(/^#/, ''));
          if (!Number.isInteger(id)) throw new Error('After: not a list of job ids: ' + after);
          return id;
        });
      }
    } catch (err) { toast(err.message, true); return; }
    act('Job added', 'POST', 'api/jobs', data).then((job) => {
      if (job && job.existing) toast('Job ' + job.id + ' holds that unique key: nothing added');
      if (job) selectJob(job.id);
    });
  });
  const cronForm = $('#add-cron');
  scheduleFields(cronForm);
  cronForm.addEventListener('submit', (e) => {
    e.preventDefault();
    let data;
    try { data = Object.assign({task: cronForm.task.value, input: readInput(cronForm)}, readSchedule(cronForm),
                               routingFields(cronForm, false)); }
    catch (err) { toast(err.message, true); return; }
    act('Cron job added', 'POST', 'api/cronjobs', data).then((job) => { if (job) selectJob(job.id); });
  });
  const editForm = $('#cron-edit');
  scheduleFields(editForm);
  editForm.addEventListener('submit', (e) => {
    e.preventDefault();
    let data;
    try { data = readSchedule(editForm); } catch (err) { toast(err.message, true); return; }
    const id = state.selected;
    act('Cron job ' + id + ' rescheduled', 'PUT', 'api/cronjobs/' + id, data)
      .then(() => { state.cronEditFor = null; });
  });
  $('#clean').addEventListener('submit', (e) => {
    e.preventDefault();
    const status = $$('[name=status]:checked', e.target).map((c) => c.value);
    if (!status.length) { toast('Choose at least one status', true); return; }
    if (!confirm('Remove all ' + status.join(', ') + ' jobs?')) return;
    steps('api/clean', {status}, 'removed', (n, more) => toast('Removed ' + n + ' jobs' + (more ? '…' : '')))
      .then(() => refresh(), (err) => { toast(err.message, true); refresh(); });
  });
}

async function start() {
  wire();
  try {
    state.me = await api('GET', 'api/me');
  } catch (e) { toast(e.message, true); return; }
  state.csrf = state.me.csrf_token;
  $('#user').textContent = state.me.anonymous ? 'anonymous (loopback only)'
    : state.me.name + ' · ' + state.me.role;
  $('#logout-form').hidden = state.me.via !== 'session';
  $('#logout-csrf').value = state.csrf;
  document.body.classList.toggle('viewer', !isManager());
  const tasks = (await api('GET', 'api/tasks')).tasks;
  $$('.task-select').forEach((select) => select.replaceChildren(
    ...tasks.map((t) => el('option', {value: t.name, text: t.name}))));
  const filter = $('#filter-task');
  tasks.forEach((t) => filter.append(el('option', {value: t.name, text: t.name})));
  $$('.task-filter').forEach((select) =>
    tasks.forEach((t) => select.append(el('option', {value: t.name, text: t.name}))));
  startRouting();
  startUptime();   // the retention card, the disk-full banner (uptime.js)
  await refresh();
  setInterval(refresh, 1000);
  startStats();   // charts, per-task table, the jobs' URLs (stats.js)
}

document.addEventListener('DOMContentLoaded', start);
