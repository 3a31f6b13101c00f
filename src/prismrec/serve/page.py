"""The small web page served at ``/``: enter the API key, pick a user or build a session, see results."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prismrec</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1100px}
fieldset{margin:.6rem 0;border:1px solid #ccc;border-radius:6px}
.items{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:.6rem;margin-top:.6rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.4rem;font-size:.85rem}
.card img{max-width:100%;max-height:120px;display:block}
.muted{color:#666}.err{color:#b00}
#session li{font-size:.85rem}
</style></head><body>
<h1>prismrec</h1>
<p class="muted" id="info">loading...</p>
<fieldset><legend>API key</legend>
<input id="key" type="password" size="40" placeholder="X-API-Key"> <button id="savekey">use</button></fieldset>
<fieldset><legend>Recommend for a user</legend>
<select id="user"></select> k <input id="k" type="number" value="10" min="1" max="100" style="width:4em">
<button id="rec">recommend</button></fieldset>
<fieldset><legend>Build a session</legend>
<input id="q" placeholder="search titles" size="40"> <button id="search">search</button>
<div id="found" class="items"></div>
<ol id="session"></ol><button id="recsession">recommend for this session</button>
<button id="clear">clear</button></fieldset>
<p id="status" class="muted"></p>
<div id="results" class="items"></div>
<script>
const $ = id => document.getElementById(id);
let session = [];
function key(){ return localStorage.getItem('prismrec-key') || ''; }
async function api(path, opts={}){
  opts.headers = Object.assign({'X-API-Key': key(), 'Content-Type': 'application/json'}, opts.headers||{});
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({}));
  if(!r.ok){ throw new Error(r.status + ': ' + (typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail))); }
  return body;
}
function card(it, onclick){
  const d = document.createElement('div'); d.className = 'card'; d.dataset.item = it.item;
  if(it.image){ const im = document.createElement('img'); im.src = it.image; im.alt = ''; im.onerror = () => im.remove(); d.appendChild(im); }
  const t = document.createElement('div'); t.textContent = it.title || it.item; d.appendChild(t);
  const m = document.createElement('div'); m.className = 'muted';
  m.textContent = it.item + (it.score !== undefined ? ' · ' + it.score.toFixed(3) : ''); d.appendChild(m);
  if(onclick){ d.style.cursor = 'pointer'; d.onclick = () => onclick(it); }
  return d;
}
function show(items, method){
  const box = $('results'); box.innerHTML = ''; box.dataset.method = method || '';
  items.forEach(it => box.appendChild(card(it)));
  $('status').className = 'muted';
  $('status').textContent = items.length + ' recommendations' + (method ? ' (' + method + ')' : '');
}
function fail(e){ $('status').className = 'err'; $('status').textContent = e.message; }
async function loadUsers(){
  try{ const r = await api('/v1/users?limit=100'); $('user').innerHTML = '';
    r.users.forEach(u => { const o = document.createElement('option'); o.value = u; o.textContent = u; $('user').appendChild(o); });
  }catch(e){ fail(e); }
}
$('savekey').onclick = () => { localStorage.setItem('prismrec-key', $('key').value); loadUsers(); };
$('rec').onclick = async () => {
  try{ const r = await api('/v1/recommend', {method:'POST', body: JSON.stringify({user: $('user').value, k: +$('k').value})});
    show(r.items, r.method); }catch(e){ fail(e); } };
$('search').onclick = async () => {
  try{ const r = await api('/v1/items?limit=12&q=' + encodeURIComponent($('q').value)); const box = $('found'); box.innerHTML = '';
    r.items.forEach(it => box.appendChild(card(it, it => { session.push(it.item);
      const li = document.createElement('li'); li.textContent = it.title || it.item; $('session').appendChild(li); })));
  }catch(e){ fail(e); } };
$('recsession').onclick = async () => {
  try{ const r = await api('/v1/recommend/session', {method:'POST', body: JSON.stringify({items: session, k: +$('k').value})});
    show(r.items, r.method); }catch(e){ fail(e); } };
$('clear').onclick = () => { session = []; $('session').innerHTML = ''; };
fetch('/health').then(r => r.json()).then(h => {
  $('info').textContent = h.model + ' on ' + h.dataset + ': ' + h.items + ' items, ' + h.users + ' users, index ' + h.index;
});
// #key=K&user=U&session=I1,I2&k=N in the address fills the form and runs it (links, headless checks)
const hash = new URLSearchParams(location.hash.slice(1));
if(hash.get('key')){ localStorage.setItem('prismrec-key', hash.get('key')); }
if(hash.get('k')){ $('k').value = hash.get('k'); }
$('key').value = key();
(async () => {
  if(!key()) return;
  await loadUsers();
  if(hash.get('user')){
    const u = hash.get('user');
    if(![...$('user').options].some(o => o.value === u)){ const o = document.createElement('option'); o.value = u; o.textContent = u; $('user').appendChild(o); }
    $('user').value = u; $('rec').click();
  } else if(hash.get('session')){
    session = hash.get('session').split(',');
    session.forEach(i => { const li = document.createElement('li'); li.textContent = i; $('session').appendChild(li); });
    $('recsession').click();
  }
})();
</script></body></html>
"""
