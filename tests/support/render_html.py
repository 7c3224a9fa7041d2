#!/usr/bin/python3
"""tests/support/render_html.py — load an HTML file in headless Chromium through the
Chrome DevTools Protocol and judge it: no request other than file: or data:, no
JavaScript exception, no console or log error. Saves a PNG screenshot of the first
page (A4 width viewport).

usage: render_html.py FILE.html SCREENSHOT.png
Prints one JSON line {"requests": [...], "errors": [...], "screenshot": PATH};
exit 0 when clean, 1 when something was found, 77 when Chromium or the websocket
module is missing (the caller reports the test skipped).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import websocket  # python3-websocket
except ImportError:
    print(json.dumps({"skip": "python3-websocket is not installed"}))
    sys.exit(77)


def main():
    html, png = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chrome:
        print(json.dumps({"skip": "chromium is not installed"}))
        return 77
    profile = tempfile.mkdtemp(prefix="reduit-chromium.")
    args = [chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--metrics-recording-only",
            "--remote-debugging-port=0", "--user-data-dir=" + profile, "--window-size=794,1123",
            "about:blank"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 20
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if time.time() > deadline or proc.poll() is not None:
                print(json.dumps({"errors": ["chromium did not start"]}))
                return 1
            time.sleep(0.1)
        port = open(port_file).read().split("\n")[0].strip()
        # The page target (not the browser endpoint): /json lists it.
        import urllib.request
        targets = json.load(urllib.request.urlopen("http://127.0.0.1:%s/json" % port, timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=20)
        next_id = [0]

        def send(method, params=None):
            next_id[0] += 1
            ws.send(json.dumps({"id": next_id[0], "method": method, "params": params or {}}))
            return next_id[0]

        requests, errors, results = [], [], {}

        def pump(until_id=None, until_event=None, timeout=15):
            end = time.time() + timeout
            while time.time() < end:
                msg = json.loads(ws.recv())
                if "id" in msg:
                    results[msg["id"]] = msg
                    if msg["id"] == until_id:
                        return msg
                    continue
                method, params = msg.get("method"), msg.get("params", {})
                if method == "Network.requestWillBeSent":
                    requests.append(params["request"]["url"])
                elif method == "Runtime.exceptionThrown":
                    errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
                elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    errors.append("console: " + json.dumps(params.get("args", []))[:300])
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    errors.append("log: " + params["entry"].get("text", "")[:300])
                if until_event and method == until_event:
                    return msg
            raise TimeoutError(until_event or until_id)

        for m in ("Network.enable", "Runtime.enable", "Log.enable", "Page.enable"):
            pump(until_id=send(m))
        send("Page.navigate", {"url": "file://" + html})
        pump(until_event="Page.loadEventFired")
        time.sleep(0.3)  # late console/log events
        ws.settimeout(0.5)
        try:
            while True:
                pump(timeout=0.5)
        except (TimeoutError, websocket.WebSocketTimeoutException):
            pass
        ws.settimeout(20)
        shot = pump(until_id=send("Page.captureScreenshot", {"format": "png"}))
        import base64
        with open(png, "wb") as f:
            f.write(base64.b64decode(shot["result"]["data"]))
        ws.close()
        bad = [u for u in requests if not (u.startswith("file:") or u.startswith("data:"))]
        errors += ["request: " + u for u in bad]
        print(json.dumps({"requests": requests, "errors": errors, "screenshot": png}))
        return 1 if errors else 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
