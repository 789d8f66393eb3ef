'use strict';
// The retention card (GET/PUT api/retention); uses el, api, act and toast
// from app.js.

const RETENTION = ['completed', 'error', 'cancelled'];

function renderRetention(data) {
  const form = document.querySelector('#retention');
  RETENTION.forEach((status) => {
    const input = form.elements[status];
    if (document.activeElement === input) return;   // being edited
    const value = data.retention[status];
    input.value = value === null || value === undefined ? '' : String(value);
  });
  const removed = data.removed || {};
  document.querySelector('#retention-removed').textContent =
    'Removed so far: ' + (removed.retention || 0) + ' by retention, ' +
    (removed.clean || 0) + ' by clean, ' + (removed.delete || 0) + ' deleted.';
}

async function loadRetention() {
  try { renderRetention(await api('GET', 'api/retention')); }
  catch (e) { /* the page's live marker shows a server that is away */ }
}

function wireRetention() {
  const form = document.querySelector('#retention');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = {};
    for (const status of RETENTION) {
      const raw = form.elements[status].value.trim();
      data[status] = raw === '' ? null : Number(raw);
    }
    act('Retention saved', 'PUT', 'api/retention', data).then((result) => {
      if (result) renderRetention(result);
    });
  });
  loadRetention();
  setInterval(loadRetention, 10000);
}

document.addEventListener('DOMContentLoaded', wireRetention);

// A banner while this server's database disk is full (GET api/health).
async function checkHealth() {
  let data;
  try { data = await api('GET', 'api/health'); } catch (e) { return; }
  let banner = document.querySelector('#health-banner');
  if (!data.disk_full) { if (banner) banner.hidden = true; return; }
  if (!banner) {
    banner = el('div', {id: 'health-banner', class: 'toast toast-error', role: 'alert'});
    banner.style.position = 'static';
    document.querySelector('header.top').after(banner);
  }
  banner.textContent = 'The disk of the database is full: new jobs are refused (503) and ' +
    'processing waits. Free some space; it goes on by itself. (' + (data.error || '') + ')';
  banner.hidden = false;
}

document.addEventListener('DOMContentLoaded', () => {
  checkHealth();
  setInterval(checkHealth, 5000);
});
