"""How events flow: the Faust app, agents, batching, timers."""
