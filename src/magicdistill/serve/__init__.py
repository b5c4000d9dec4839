"""``magicdistill serve``: warm models behind OpenAI's Videos API (``/v1/videos``) and a web page.

registry.py: the loaded models; jobs.py: the bounded job queue and its worker; app.py: the HTTP routes;
server.py: start-up (load, bind, run); page.html: the web page (plain HTML + JS on the same /v1 API).
"""
