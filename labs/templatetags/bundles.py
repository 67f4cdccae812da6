"""{% bundle "bundles/lesson.js" %}: the tags that load a bundle of static
files (labs/staticfiles.py), or each of its files where the site does not
serve /static/ itself (SERVE_STATIC=0: a server in front serves what
collectstatic gathered, and knows no bundles)."""
from django import template
from django.conf import settings
from django.templatetags.static import static
from django.utils.html import format_html_join

from labs.staticfiles import BUNDLES

register = template.Library()


@register.simple_tag
def bundle(path: str):
    files = [path] if settings.SERVE_STATIC else list(BUNDLES[path])
    if path.endswith(".js"):
        return format_html_join("\n", '<script src="{}"></script>', ((static(f),) for f in files))
    return format_html_join("\n", '<link rel="stylesheet" href="{}">', ((static(f),) for f in files))
