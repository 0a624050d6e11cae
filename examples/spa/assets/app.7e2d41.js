// The front end asks the backend (through the same nginx) which release serves it.
fetch('/version')
  .then((r) => r.json())
  .then((v) => { document.getElementById('version').textContent = v.version; })
  .catch(() => { document.getElementById('version').textContent = 'unreachable'; });
