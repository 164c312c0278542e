"""Development only: moto's server as the STS stand-in, and ``cedarkey dev``, the story on a laptop.

Apart from the production packages (a server never imports this; moto is a ``dev`` extra).
"""
