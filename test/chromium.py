"""Headless Chromium over the DevTools protocol: a page's console errors and what it shows (the
HTML reports' tests)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import websocket

from waiting import wait_until

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync']


def open_in_chromium(page: Path, profile: Path) -> tuple[list[str], dict]:
    """Load a page in headless Chromium over the DevTools protocol; returns the console
    errors (messages, exceptions, failed loads) and what the page shows."""
    log = (profile.parent / 'chromium.log').open('w')
    browser = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f'--user-data-dir={profile}',
                                '--remote-debugging-port=0', 'about:blank'],
                               stdout=log, stderr=log)
    try:
        port_file = profile / 'DevToolsActivePort'
        wait_until(port_file.exists, 60.0)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list') as response:
            targets = json.load(response)
        url = next(t['webSocketDebuggerUrl'] for t in targets if t['type'] == 'page')
        connection = websocket.create_connection(url, timeout=60, suppress_origin=True)
        errors, calls = [], iter(range(1, 1000))

        def call(method: str, **params: object) -> dict:
            number = next(calls)
            connection.send(json.dumps({'id': number, 'method': method, 'params': params}))
            while True:
                message = json.loads(connection.recv())
                if message.get('id') == number:
                    return message.get('result', {})
                note(message)

        def note(message: dict) -> None:
            method, params = message.get('method'), message.get('params', {})
            if method == 'Runtime.consoleAPICalled' and params['type'] in ('error', 'assert'):
                errors.append(json.dumps(params['args']))
            elif method == 'Runtime.exceptionThrown':
                errors.append(params['exceptionDetails']['text'])
            elif method == 'Log.entryAdded' and params['entry']['level'] == 'error':
                errors.append(params['entry']['text'])

        for domain in ('Runtime', 'Log', 'Page'):
            call(f'{domain}.enable')
        call('Page.navigate', url=page.as_uri())
        while True:
            message = json.loads(connection.recv())
            if message.get('method') == 'Page.loadEventFired':
                break
            note(message)
        shown = call('Runtime.evaluate', returnByValue=True, expression='''({
            thumbnails: document.querySelectorAll('div.gallery img').length,
            loaded: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
            images: document.images.length,
            plots: document.querySelectorAll('img.plot').length,
            sections: document.querySelectorAll('section.bag').length,
            pairs: document.querySelectorAll('figure.pair').length,
            pair_images: [...document.querySelectorAll('figure.pair img')].filter(
                i => i.complete && i.naturalWidth > 0).map(i => i.getAttribute('src')),
            text: document.body.innerText})''')['result']['value']
        connection.close()
        return errors, shown
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        log.close()
