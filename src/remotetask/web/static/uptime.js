'use strict';
// The retention card (GET/PUT api/retention) and the disk-full banner (GET
// api/health); uses el, api, toast and isManager from app.js, whose start()
// calls startUptime() once it knows the user's role.

const RETENTION = ['completed', 'error', 'cancelled'];

// Show the service's retention.  An input the user changed and did not save
// yet is left as it is (unless ``saved``: the answer to a save).
function renderRetention(data, saved) {
  const form = document.querySelector('#retention');
  RETENTION.forEach((status) => {
    const input = form.elements[status];
    const value = data.retention[status];
    const text = value === null || value === undefined ? '' : String(value);
    const edited = input.dataset.shown !== undefined && input.value !== input.dataset.shown;
    if (!saved && (edited || document.activeElement === input)) return;
    input.value = input.dataset.shown = text;
  });
  const removed = data.removed || {};
  document.querySelector('#retention-removed').textContent =
    'Removed so far: ' + (removed.retention || 0) + ' by retention, ' +
    (removed.clean || 0) + ' by clean, ' + (removed.delete || 0) + ' deleted.';
}

// The seconds typed for ``status``: null when empty (keep for ever); an
// Error naming the field for anything but a number >= 0.
function readSeconds(status, raw) {
  if (raw === '') return null;
  const number = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw) ? Number(raw) : NaN;
  if (!isFinite(number))
    throw new Error(status + ': "' + raw + '" is not a number of seconds (leave it empty to keep ' +
                    status + ' jobs for ever). Nothing was saved.');
  if (number < 0)
    throw new Error(status + ': ' + raw + ' is negative: give seconds >= 0 (leave it empty to keep ' +
                    status + ' jobs for ever). Nothing was saved.');
  return number;
}

function retentionError(message, status) {
  const box = document.querySelector('#retention-error');
  box.textContent = message || '';
  box.hidden = !message;
  const form = document.querySelector('#retention');
  RETENTION.forEach((s) => {
    if (s === status) form.elements[s].setAttribute('aria-invalid', 'true');
    else form.elements[s].removeAttribute('aria-invalid');
  });
}

async function loadRetention() {
  try { renderRetention(await api('GET', 'api/retention')); }
  catch (e) { /* the page's live marker shows a server that is away */ }
}

function startRetention() {
  const form = document.querySelector('#retention');
  // A viewer sees the values; only a manager may change them.
  RETENTION.forEach((status) => { form.elements[status].readOnly = !isManager(); });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!isManager()) return;
    const data = {};
    for (const status of RETENTION) {
      try { data[status] = readSeconds(status, form.elements[status].value.trim()); }
      catch (err) { retentionError(err.message, status); return; }
    }
    try {
      const result = await api('PUT', 'api/retention', data);
      retentionError('');
      renderRetention(result, true);
      toast('Retention saved');
    } catch (err) {
      const status = RETENTION.find((s) => err.message.includes("'" + s + "'"));
      retentionError(err.message + ' Nothing was saved.', status);
    }
  });
  loadRetention();
  setInterval(loadRetention, 10000);
}

// A banner while this server's database disk is full (GET api/health); it
// stays in view (sticky) wherever the page is scrolled.
async function checkHealth() {
  let data;
  try { data = await api('GET', 'api/health'); } catch (e) { return; }
  let banner = document.querySelector('#health-banner');
  if (!data.disk_full) { if (banner) banner.hidden = true; return; }
  if (!banner) {
    banner = el('div', {id: 'health-banner', class: 'health-banner', role: 'alert'},
                el('strong', {}), el('span', {class: 'health-detail small'}));
    document.querySelector('header.top').after(banner);
  }
  banner.querySelector('strong').textContent = 'The disk of the database is full: new jobs are ' +
    'refused (503) and processing waits. Free some space: it goes on by itself.';
  banner.querySelector('.health-detail').textContent = data.error ? 'Last error: ' + data.error : '';
  banner.title = data.since ? 'Since ' + when(data.since) : '';
  banner.hidden = false;
}

function startUptime() {
  startRetention();
  checkHealth();
  setInterval(checkHealth, 5000);
}
