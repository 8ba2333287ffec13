"""One DRF view protected by HasAPIKey: the peer's equivalent of kbai's /auth/check."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_api_key.permissions import HasAPIKey


class Check(APIView):
    permission_classes = [HasAPIKey]

    def get(self, request):
        return Response({"active": True})


urlpatterns = [path("check", Check.as_view())]
