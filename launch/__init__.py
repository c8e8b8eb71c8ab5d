"""Starting and stopping the app's processes: stop signals, the UI workers and their front,
the orphan reaper.

| module | job |
|---|---|
| `signals` | the first SIGINT/SIGTERM starts an orderly stop, a second ends the app at once |
| `ui_process` | the Gradio UI workers and the front before them: start, watch, restart |
| `ui_front` | the UI's public port: each request relayed to its browser's UI worker |
| `reaper` | ends the engine's processes if the app is killed outright (`kill -9`) |
"""
