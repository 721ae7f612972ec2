from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView

from accounts import services
from accounts.throttling import LoginAccountThrottle, LoginIPThrottle

User = get_user_model()


class UserOutput(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "display_name", "is_staff", "date_joined"]
        read_only_fields = fields


class ThrottledTokenObtainPairView(TokenObtainPairView):
    """`{email, password}` -> `{access, refresh}`; unknown email and wrong password look alike."""

    throttle_classes = [LoginIPThrottle, LoginAccountThrottle]


class LogoutInput(serializers.Serializer):
    refresh = serializers.CharField()


class LogoutView(APIView):
    @extend_schema(request=LogoutInput, responses={204: None})
    def post(self, request):
        data = LogoutInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token = RefreshToken(data.validated_data["refresh"])
        except TokenError as exc:
            raise serializers.ValidationError({"refresh": [str(exc)]}) from None
        if str(token.get(jwt_settings.USER_ID_CLAIM)) != str(request.user.pk):
            raise PermissionDenied("This refresh token belongs to another account.")
        token.blacklist()
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @extend_schema(responses=UserOutput)
    def get(self, request):
        return Response(UserOutput(request.user).data)


class RegisterInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(write_only=True, max_length=128)
    display_name = serializers.CharField(max_length=150, required=False, allow_blank=True)

    def validate(self, attrs):
        try:
            validate_password(attrs["password"], User(email=attrs["email"]))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


class RegisterView(APIView):
    permission_classes = [permissions.AllowAny]
    throttle_classes = [LoginIPThrottle]

    @extend_schema(request=RegisterInput, responses={201: UserOutput})
    def post(self, request):
        if not settings.REGISTRATION_ENABLED:
            raise NotFound("Registration is disabled on this server; ask an administrator.")
        data = RegisterInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            user = services.register_user(**data.validated_data)
        except services.EmailTaken:
            raise serializers.ValidationError(
                {"email": ["An account with this email address already exists."]}
            ) from None
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)
