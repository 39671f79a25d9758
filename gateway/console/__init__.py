"""The admin console: server-rendered pages at ``/console`` over the admin API's library functions."""
