"""Starting and stopping the app's processes: stop signals, the UI process, the orphan reaper.

| module | job |
|---|---|
| `signals` | the first SIGINT/SIGTERM starts an orderly stop, a second ends the app at once |
| `ui_process` | the Gradio UI in a process of its own, started again if it dies |
| `reaper` | ends the engine's processes if the app is killed outright (`kill -9`) |
"""
