// The queues panel of the management page, and the routing fields of its
// forms and filters (see remotetask.web.routing).  Uses app.js's helpers
// (api, act, el, toast, refresh, state); app.js calls startRouting().
'use strict';

const routing = {queues: [], pauses: [], busy: false};

function queueText(filter) {
  const parts = [];
  if (filter.queue) parts.push('queue ' + filter.queue);
  if (filter.task) parts.push('task ' + filter.task);
  return parts.join(' and ') || 'every queue';
}

// Tags of a job row: its queue (unless 'default') and priority (unless 0).
function routingTags(job) {
  const tags = [];
  if (job.queue && job.queue !== 'default')
    tags.push(el('span', {class: 'tag tag-queue', title: 'queue', text: job.queue}));
  if (job.priority)
    tags.push(el('span', {class: 'tag tag-priority', title: 'priority',
                          text: (job.priority > 0 ? '+' : '') + job.priority}));
  return tags;
}

// queue, priority (and unique_key) of the add forms; only what is given.
function routingFields(form, unique) {
  const data = {};
  const queue = form.queue.value.trim();
  if (queue) data.queue = queue;
  const priority = form.priority.value.trim();
  if (priority !== '' && priority !== '0') {
    const n = Number(priority);
    if (!Number.isInteger(n)) throw new Error('Priority must be a whole number: ' + priority);
    data.priority = n;
  }
  if (unique) {
    const key = form.unique_key.value.trim();
    if (key) data.unique_key = key;
  }
  return data;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return '';
  const s = Math.round(seconds);
  return s < 60 ? s + 's' : s < 3600 ? Math.round(s / 60) + 'm'
    : s < 86400 ? Math.round(s / 3600) + 'h' : Math.round(s / 86400) + 'd';
}

// Ask the server how many jobs a bulk action would change, say it in the
// confirmation, then do it.  Both go in bounded steps (steps() of app.js),
// the running total in the toast.
async function bulkAction(action, filter) {
  const what = {retry: ['Retry', 'failed'], purge: ['Cancel', 'waiting']}[action];
  const path = 'api/bulk/' + action;
  let count;
  try {
    count = await steps(path, Object.assign({dry_run: true}, filter), 'count',
                        (n, more) => { if (more) toast('Counting… ' + n); });
  } catch (e) { toast(e.message, true); return; }
  if (!count) { toast('No ' + what[1] + ' jobs in ' + queueText(filter)); return; }
  if (!confirm(what[0] + ' ' + count + ' ' + what[1] + ' job' + (count === 1 ? '' : 's') +
               ' of ' + queueText(filter) + '?')) return;
  const done = action === 'retry' ? 'Queued again ' : 'Cancelled ';
  const jobs = (n) => n + ' job' + (n === 1 ? '' : 's');
  try {
    await steps(path, filter, 'count', (n, more) => toast(done + jobs(n) + (more ? '…' : '')));
  } catch (e) { toast(e.message, true); }
  await refresh();
}

function pauseAction(paused, filter) {
  const path = paused ? 'api/resume' : 'api/pause';
  return act((paused ? 'Resumed ' : 'Paused ') + queueText(filter), 'POST', path, filter)
    .then(() => refreshQueues());
}

function renderQueues(data) {
  routing.queues = data.queues;
  routing.pauses = data.pauses;
  const manager = isManager();
  const body = $('#queues tbody');
  body.replaceChildren(...data.queues.map((q) => el('tr', {'data-queue': q.queue},
    el('td', {}, el('a', {href: '#queue-' + q.queue, class: 'queue-link',
                          onclick: (e) => { e.preventDefault(); setQueueFilter(q.queue); }}, q.queue)),
    el('td', {class: 'num', text: q.waiting}), el('td', {class: 'num', text: q.processing}),
    el('td', {title: given(q.oldest_due) ? when(q.oldest_due) : ''},
       q.oldest_age === null ? '' : age(q.oldest_age) + ' overdue'),
    el('td', {text: q.priorities.join(' ')}),
    el('td', {class: q.paused ? 'paused-state' : '', text: q.paused ? 'paused' : 'active'}),
    el('td', {class: 'actions'}, ...(manager ? [
      el('button', {class: 'small', 'data-action': q.paused ? 'resume' : 'pause',
                    onclick: () => pauseAction(q.paused, {queue: q.queue})}, q.paused ? 'Resume' : 'Pause'),
      el('button', {class: 'small danger', 'data-action': 'purge',
                    onclick: () => bulkAction('purge', {queue: q.queue})}, 'Purge')] : [])))));
  const others = data.pauses.filter((p) => p.task || !p.queue);
  $('#pauses').replaceChildren(...others.map((p) => el('div', {class: 'pause'},
    el('span', {class: 'paused-state', text: 'Paused: '}), queueText(p) + ' ',
    manager ? el('button', {class: 'small', 'data-action': 'resume',
                            onclick: () => pauseAction(true, {queue: p.queue || undefined,
                                                              task: p.task || undefined})}, 'Resume') : '')));
  $('#paused-summary').textContent = data.paused_jobs
    ? data.paused_jobs + ' waiting job' + (data.paused_jobs === 1 ? '' : 's') + ' paused' : '';
  // Queue choices of the filters and forms.
  const names = data.queues.map((q) => q.queue);
  for (const select of [$('#filter-queue'), $('#bulk [name=queue]')]) {
    const current = select.value;
    select.replaceChildren(el('option', {value: '', text: 'any'}),
                           ...names.map((n) => el('option', {value: n, text: n})));
    if (current && !names.includes(current)) select.append(el('option', {value: current, text: current}));
    select.value = current;
  }
  $('#queue-names').replaceChildren(...names.map((n) => el('option', {value: n})));
}

async function refreshQueues() {
  if (routing.busy) return;
  routing.busy = true;
  try { renderQueues(await api('GET', 'api/queues')); }
  catch (e) { /* the live marker of app.js says when the API is away */ }
  finally { routing.busy = false; }
}

function setQueueFilter(queue) {
  state.queue = queue;
  $('#filter-queue').value = queue;
  state.cursors = [null];
  refresh();
}

function bulkFilter() {
  const form = $('#bulk');
  const filter = {};
  if (form.queue.value) filter.queue = form.queue.value;
  if (form.task.value) filter.task = form.task.value;
  return filter;
}

function startRouting() {
  $('#filter-queue').addEventListener('change', (e) => setQueueFilter(e.target.value));
  $('#filter-priority').addEventListener('change', (e) => {
    const value = e.target.value.trim();
    if (value !== '' && !Number.isInteger(Number(value))) { toast('Priority must be a whole number', true); return; }
    state.priority = value;
    state.cursors = [null];
    refresh();
  });
  for (const button of $$('#bulk [data-bulk]')) {
    button.addEventListener('click', () => {
      const action = button.dataset.bulk;
      const filter = bulkFilter();
      if (action === 'pause' || action === 'resume') pauseAction(action === 'resume', filter);
      else bulkAction(action, filter);
    });
  }
  refreshQueues();
  setInterval(refreshQueues, 1000);
}
